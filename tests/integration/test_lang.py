"""RFC 6856 §3 LANG: the capability, the language listing, switching the reply texts to Spanish
(response codes and protocol data unchanged), unknown and malformed language ranges, LANG before
and after login, and STLS starting the TLS session in English again."""

import re

from buzontest import make_message
from tlstest import TPop3, client_context, tls_server


def utf8(line):
    """The harness decodes lines as latin-1; LANG texts are UTF-8 (RFC 6856 §3.2)."""
    return line.encode("latin-1").decode("utf-8")


def test_capa_announces_lang_in_both_states(server):
    c = server.connect()
    assert "LANG" in c.capa()
    c.login()
    assert "LANG" in c.capa()
    c.quit()


def test_lang_lists_languages_and_replies_stay_ascii_until_chosen(server):
    c = server.connect()
    r = c.ok("LANG")
    assert r == "+OK Language listing follows", r
    # RFC 6856 §3.2: "tag SP description in the language itself", UTF-8
    assert [utf8(l) for l in c.multi_lines()] == ["en English", "es Español"]
    r = c.err("FOO")
    assert r == "-ERR Unknown command", r
    c.quit()


def test_lang_es_switches_texts_but_not_codes_or_data(server):
    server.deliver(make_message("uno", b"cuerpo\n"))
    holder = server.login()  # holds the maildrop lock for the [IN-USE] below

    c = server.connect()
    # the reply to LANG is already in the new language, after the exact tag (RFC 6856 §3.2)
    assert utf8(c.ok("LANG es")) == "+OK es Idioma cambiado"
    assert utf8(c.err("FOO")) == "-ERR Comando desconocido"
    assert utf8(c.ok("USER demo")) == "+OK Envíe su contraseña"
    assert utf8(c.err("PASS secret")) == "-ERR [IN-USE] El buzón está bloqueado por otra sesión"
    holder.quit()

    c.ok("USER demo")
    r = utf8(c.ok("PASS secret"))
    assert re.fullmatch(r"\+OK Sesión iniciada; mensajes: 1 \(\d+ octetos\)", r), r
    assert c.stat()[0] == 1  # data only: "+OK 1 N"
    uidl = c.uidl()
    assert re.fullmatch(r"[0-9a-f]{16}", uidl[1]), uidl
    assert c.ok("UIDL 1") == "+OK 1 " + uidl[1]
    assert re.fullmatch(r"\+OK \d+ octetos", c.cmd("RETR 1"))
    c.read_multi_wire()
    assert utf8(c.err("RETR 7")) == "-ERR No existe ese mensaje"
    assert utf8(c.err("USER x")) == "-ERR USER no es válido en este estado"
    assert utf8(c.ok("DELE 1")) == "+OK Mensaje 1 marcado para borrar"
    assert utf8(c.err("DELE 1")) == "-ERR El mensaje 1 está marcado para borrar"
    assert utf8(c.ok("RSET")).startswith("+OK Mensajes: 1 (")
    # the RETR above marks the message seen, so QUIT commits
    assert utf8(c.quit()) == "+OK Cerrando la sesión; mensajes borrados: 0, restantes: 1"


def test_unknown_and_malformed_ranges_keep_the_language(server):
    c = server.connect()
    assert c.err("LANG uga") == "-ERR Language uga is not available"
    # basic filtering (RFC 4647 §3.3.1): "es-MX" is more specific than "es"
    assert c.err("LANG es-MX") == "-ERR Language es-MX is not available"
    assert c.err("LANG es_ES") == "-ERR Invalid language range"
    assert c.err("LANG es en") == "-ERR Wrong number of arguments for LANG"
    assert utf8(c.ok("LANG ES")) == "+OK es Idioma cambiado"  # case-insensitive
    # a failed LANG leaves the language as it was (RFC 6856 §3.2)
    assert utf8(c.err("LANG MUL")) == "-ERR El idioma MUL no está disponible"
    assert utf8(c.err("LANG x@y")) == "-ERR Rango de idioma no válido"
    assert utf8(c.err("FOO")) == "-ERR Comando desconocido"
    # "*": the server's preferred language, English
    assert c.ok("LANG *") == "+OK en Language changed"
    assert c.err("FOO") == "-ERR Unknown command"
    c.quit()


def test_lang_after_login_and_back_to_english(server):
    c = server.login()
    assert utf8(c.ok("LANG es")) == "+OK es Idioma cambiado"
    assert utf8(c.ok("NOOP")) == "+OK"
    assert utf8(c.err("TOP 1 0")) == "-ERR No existe ese mensaje"
    assert c.ok("LANG en") == "+OK en Language changed"
    assert c.err("TOP 1 0") == "-ERR No such message"
    assert c.ok("LANG") == "+OK Language listing follows"
    c.multi_lines()
    assert c.quit() == "+OK Logging out, 0 messages left"


def test_stls_starts_tls_in_english(make_server):
    # RFC 6856 §7: a LANG sent in plaintext may come from a man in the middle
    srv = tls_server(make_server, implicit=False)
    c = TPop3(srv.port)
    assert utf8(c.ok("LANG es")) == "+OK es Idioma cambiado"
    # the +OK to STLS is still in Spanish: it is the last plaintext reply
    assert utf8(c.starttls(client_context(srv.ca))) == "+OK Comience ahora la negociación TLS"
    assert c.err("FOO") == "-ERR Unknown command"
    c.quit()
