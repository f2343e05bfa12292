/* RFC 6856 §3 LANG: the languages, language-range matching, the catalog of reply texts and the
 * LANG command. */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <string.h>
#include <strings.h>

#include "core/util.h"
#include "pop3/commands.h"
#include "pop3/lang.h"
#include "pop3/session.h"

/* In enum pop3_lang order. */
static const struct pop3_language pop3_languages[POP3_LANG_COUNT] = {
    [POP3_LANG_EN] = {"en", "English"},
    [POP3_LANG_ES] = {"es", "Español"},
};

/* Every reply format with words, in English (the key, exactly as the code writes it) and in each
 * other language, in enum pop3_lang order. Grouped by the file that sends them.
 *
 * Spanish: "usted" throughout; counts are put after a label ("mensajes: %zu") where Spanish
 * would need the number to agree with its noun, except in RETR's "%llu octetos", whose leading
 * number some clients read (RFC 1939's example "+OK 120 octets"). */
static const struct pop3_lang_entry {
	const char *text[POP3_LANG_COUNT];
} pop3_lang_catalog[] = {
    /* commands.c */
    {{"No such message", "No existe ese mensaje"}},
    {{"Message %zu is deleted", "El mensaje %zu está marcado para borrar"}},
    {{"TLS is already active", "TLS ya está activo"}},
    {{"STLS is not available", "STLS no está disponible"}},
    {{"Begin TLS negotiation now", "Comience ahora la negociación TLS"}},
    {{"Capability list follows", "Lista de capacidades a continuación"}},
    {{"%s The update could not be completed, try again later",
      "%s No se pudo completar la actualización, inténtelo de nuevo más tarde"}},
    {{"Logging out, %zu messages left", "Cerrando la sesión; mensajes restantes: %zu"}},
    {{"Logging out, %zu messages deleted, %zu left",
      "Cerrando la sesión; mensajes borrados: %zu, restantes: %zu"}},
    {{"Logging out, %zu messages deleted and %zu expired, %zu left",
      "Cerrando la sesión; mensajes borrados: %zu, caducados: %zu, restantes: %zu"}},
    {{"Logging out", "Cerrando la sesión"}},
    {{"%zu messages (%llu octets)", "Mensajes: %zu (%llu octetos)"}},
    {{"Unique-ID listing follows", "Lista de identificadores únicos a continuación"}},
    {{"%s Message %zu cannot be read now", "%s No se puede leer el mensaje %zu en este momento"}},
    {{"%llu octets", "%llu octetos"}},
    {{"Top of message follows", "Comienzo del mensaje a continuación"}},
    {{"Invalid number of lines", "Número de líneas no válido"}},
    {{"Message %zu deleted", "Mensaje %zu marcado para borrar"}},
    {{"Unknown command", "Comando desconocido"}},
    {{"%s is not valid in this state", "%s no es válido en este estado"}},
    {{"Wrong number of arguments for %s", "Número de argumentos incorrecto para %s"}},
    {{"Empty command", "Comando vacío"}},
    {{"Control characters are not allowed in commands",
      "No se permiten caracteres de control en los comandos"}},

    /* session.c */
    {{"Login timeout, closing connection",
      "Se agotó el tiempo para iniciar sesión, cerrando la conexión"}},
    {{"Too many bad commands, closing connection",
      "Demasiados comandos erróneos, cerrando la conexión"}},
    {{"Line too long (at most %d octets)", "Línea demasiado larga (máximo %d octetos)"}},
    {{"Line too long (at most %d octets), authentication cancelled",
      "Línea demasiado larga (máximo %d octetos), autenticación cancelada"}},
    {{"NUL bytes are not allowed in commands", "No se permiten bytes NUL en los comandos"}},
    {{"NUL bytes are not allowed in responses, authentication cancelled",
      "No se permiten bytes NUL en las respuestas, autenticación cancelada"}},
    {{"Idle timeout, closing connection",
      "Se agotó el tiempo de inactividad, cerrando la conexión"}},

    /* login.c */
    {{"[AUTH] Plaintext logins are not allowed without TLS",
      "[AUTH] No se permite iniciar sesión con la contraseña en claro sin TLS"}},
    {{"[AUTH] Plaintext logins are not allowed without TLS; use STLS or port 995",
      "[AUTH] No se permite iniciar sesión con la contraseña en claro sin TLS; use STLS o el "
      "puerto 995"}},
    {{"[AUTH] Authentication failed", "[AUTH] La autenticación ha fallado"}},
    {{"[IN-USE] Mailbox is locked by another session",
      "[IN-USE] El buzón está bloqueado por otra sesión"}},
    {{"%s Cannot open the mailbox", "%s No se puede abrir el buzón"}},
    {{"Logged in, %zu messages (%llu octets)", "Sesión iniciada; mensajes: %zu (%llu octetos)"}},
    {{"[SYS/TEMP] Too many sessions from your address",
      "[SYS/TEMP] Demasiadas sesiones desde su dirección"}},
    {{"[SYS/TEMP] Too many failed logins from your address, try later",
      "[SYS/TEMP] Demasiados inicios de sesión fallidos desde su dirección, inténtelo más "
      "tarde"}},
    {{"[SYS/TEMP] Authentication is unavailable, try again later",
      "[SYS/TEMP] La autenticación no está disponible, inténtelo de nuevo más tarde"}},
    {{"Send your password", "Envíe su contraseña"}},
    {{"Send USER first", "Envíe primero USER"}},
    {{"PASS needs a password", "PASS necesita una contraseña"}},
    {{"APOP is not enabled", "APOP no está habilitado"}},
    {{"The APOP digest must be 32 hexadecimal digits",
      "El resumen APOP debe tener 32 dígitos hexadecimales"}},
    {{"Unsupported authentication mechanism", "Mecanismo de autenticación no admitido"}},
    {{"Malformed base64 in the initial response", "Base64 mal formado en la respuesta inicial"}},
    {{"Authentication cancelled", "Autenticación cancelada"}},
    {{"Malformed base64 response, authentication cancelled",
      "Respuesta en base64 mal formada, autenticación cancelada"}},
    {{"UTF8 enabled", "UTF8 activado"}},

    /* login.c: LOGIN-DELAY */
    {{"[LOGIN-DELAY] Too soon after the last login, wait %u seconds",
      "[LOGIN-DELAY] Demasiado pronto desde el último inicio de sesión; espere %u s"}},

    /* lang.c */
    {{"Language listing follows", "Lista de idiomas a continuación"}},
    {{"%s Language changed", "%s Idioma cambiado"}},
    {{"Language %s is not available", "El idioma %s no está disponible"}},
    {{"Invalid language range", "Rango de idioma no válido"}},
};

const struct pop3_language *pop3_lang_get(enum pop3_lang lang)
{
	return &pop3_languages[lang];
}

/* ---- matching (RFC 4647) ---- */

static bool pop3_lang_is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool pop3_lang_is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* RFC 4647 §2.1: language-range = (1*8ALPHA *("-" 1*8alphanum)) / "*" */
static bool pop3_lang_range_valid(const char *range)
{
	size_t subtag_len = 0;
	bool first = true;

	if (strcmp(range, "*") == 0)
		return true;
	for (const char *p = range;; p++) {
		if (*p == '-' || *p == '\0') {
			if (subtag_len == 0)
				return false;
			if (*p == '\0')
				return true;
			subtag_len = 0;
			first = false;
			continue;
		}
		if (!pop3_lang_is_alpha(*p) && (first || !pop3_lang_is_digit(*p)))
			return false;
		if (++subtag_len > 8)
			return false;
	}
}

/* RFC 4647 §3.3.1: the range equals the tag, or a prefix of it that ends before a "-". */
static bool pop3_lang_range_matches(const char *range, const char *tag)
{
	size_t len = strlen(range);

	return strncasecmp(range, tag, len) == 0 && (tag[len] == '\0' || tag[len] == '-');
}

enum pop3_lang_match_result pop3_lang_match(const char *range, enum pop3_lang *lang_r)
{
	if (!pop3_lang_range_valid(range))
		return POP3_LANG_MALFORMED;
	if (strcmp(range, "*") == 0) {
		*lang_r = POP3_LANG_PREFERRED;
		return POP3_LANG_MATCHED;
	}
	for (size_t i = 0; i < POP3_LANG_COUNT; i++) {
		if (pop3_lang_range_matches(range, pop3_languages[i].tag)) {
			*lang_r = (enum pop3_lang)i;
			return POP3_LANG_MATCHED;
		}
	}
	return POP3_LANG_UNAVAILABLE;
}

/* ---- the catalog ---- */

const char *pop3_lang_format(enum pop3_lang lang, const char *fmt)
{
	if (lang == POP3_LANG_EN || (unsigned int)lang >= POP3_LANG_COUNT)
		return fmt;
	/* a linear search: some fifty entries, only for sessions that chose another language */
	for (size_t i = 0; i < ARRAY_SIZE(pop3_lang_catalog); i++) {
		if (strcmp(pop3_lang_catalog[i].text[POP3_LANG_EN], fmt) == 0)
			return pop3_lang_catalog[i].text[lang];
	}
	return fmt;
}

/* Length of the printf conversion at fmt (which starts with '%'). */
static size_t pop3_lang_conversion_len(const char *fmt)
{
	size_t n = 1;

	while (fmt[n] != '\0' && strchr("-+ #0123456789.*hljztL", fmt[n]) != NULL)
		n++;
	return fmt[n] != '\0' ? n + 1 : n;
}

bool pop3_lang_format_has_words(const char *fmt)
{
	const char *p = fmt;

	if (*p == '[') {
		const char *end = strchr(p, ']');
		if (end != NULL)
			p = end + 1;
	}
	while (*p != '\0') {
		if (*p == '%') {
			p += pop3_lang_conversion_len(p);
			continue;
		}
		if (pop3_lang_is_alpha(*p))
			return true;
		p++;
	}
	return false;
}

bool pop3_lang_catalog_entry(size_t i, enum pop3_lang lang, const char **english_r,
			     const char **translated_r)
{
	if (i >= ARRAY_SIZE(pop3_lang_catalog) || (unsigned int)lang >= POP3_LANG_COUNT)
		return false;
	*english_r = pop3_lang_catalog[i].text[POP3_LANG_EN];
	*translated_r = pop3_lang_catalog[i].text[lang];
	return true;
}

/* ---- the LANG command ---- */

/* RFC 6856 §3.2: "+OK", then one "tag name" line per language, UTF-8. */
static enum pop3_outcome pop3_lang_list(struct pop3_session *session)
{
	struct evbuffer *out = bufferevent_get_output(session->bev);

	pop3_reply_ok(session, "Language listing follows");
	for (size_t i = 0; i < POP3_LANG_COUNT; i++)
		evbuffer_add_printf(out, "%s %s\r\n", pop3_languages[i].tag,
				    pop3_languages[i].name);
	evbuffer_add(out, ".\r\n", 3);
	return POP3_OUTCOME_OK;
}

enum pop3_outcome pop3_cmd_lang(struct pop3_session *session, const struct pop3_command_line *cmd)
{
	enum pop3_lang lang = POP3_LANG_EN;

	if (cmd->arg_count == 0)
		return pop3_lang_list(session);
	switch (pop3_lang_match(cmd->args[0], &lang)) {
	case POP3_LANG_MATCHED:
		/* RFC 6856 §3.3: the reply to LANG is already in the new language */
		session->lang = lang;
		pop3_reply_ok(session, "%s Language changed", pop3_languages[lang].tag);
		return POP3_OUTCOME_OK;
	case POP3_LANG_UNAVAILABLE:
		/* a well-formed request is not a protocol error; the language stays as it was.
		 * The range is letters, digits and '-' only, so it can be echoed. */
		pop3_reply_err(session, "Language %s is not available", cmd->args[0]);
		return POP3_OUTCOME_OK;
	case POP3_LANG_MALFORMED:
		break;
	}
	pop3_reply_err(session, "Invalid language range");
	return POP3_OUTCOME_BAD;
}
