/* Test-only hooks that make the random parts of SASL conversations fixed, so that unit tests can
 * replay RFC examples. Never call these from the server: a fixed nonce or challenge lets an
 * attacker replay a captured login. They set process-wide state and are not thread-safe. */
#ifndef BUZON_SASL_SASL_TESTING_H
#define BUZON_SASL_SASL_TESTING_H

/* Makes later SCRAM conversations use nonce (printable, no ',') as the server's nonce part instead
 * of 24 random bytes in base64; NULL restores randomness. The string is copied. */
void sasl_scram_set_test_nonce(const char *nonce);

/* Makes later CRAM-MD5 conversations send challenge instead of a random one; NULL restores
 * randomness. The string is copied. */
void sasl_cram_set_test_challenge(const char *challenge);

#endif
