"""Parse a raw RFC 5322 message once, at delivery, into a JSON-able summary.

The summary carries what IMAP (ENVELOPE, BODYSTRUCTURE, section offsets),
SEARCH, SORT and JMAP need, so they never read the blob again.  Offsets are
computed by scanning the raw bytes; decoding uses the stdlib (binascii,
codecs, email.utils).  parse_message() never raises.
"""
from __future__ import annotations

import binascii
import calendar
import codecs
import html
import re
from email.utils import parsedate_tz

MAX_DEPTH = 32                # deeper multipart/message parts become opaque leaves
MAX_PARTS = 10000             # as Dovecot: later delimiters stay inside the last part
TEXT_CAP = 1 << 20            # UTF-8 bytes of search text
PREVIEW_LEN = 256
_HEADER_PARSE_CAP = 256 * 1024  # bytes of a header block whose fields are read
_ADDR_CAP = 64 * 1024         # chars of an address header that are parsed
_PARAM_CAP = 16 * 1024        # chars of a Content-Type/-Disposition that are parsed
_DECODED_CAP = 64 * 1024      # chars kept of a decoded header value
_PART_RAW_CAP = 2 << 20       # encoded bytes of one text part that are decoded

_SUMMARY_FIELDS = ("from", "to", "cc", "bcc", "reply-to", "sender", "subject", "date",
                   "message-id", "in-reply-to", "references", "list-id", "content-type")
_MISSING_MAILBOX = "MISSING_MAILBOX"   # Dovecot's placeholders: a NIL host means a group
_MISSING_DOMAIN = "MISSING_DOMAIN"


class _Ctx:
    __slots__ = ("errors", "parts")

    def __init__(self):
        self.errors = []
        self.parts = 0

    def error(self, text):
        if text not in self.errors:
            self.errors.append(text)


# -- raw header block --------------------------------------------------------

_FIELD_NAME = re.compile(rb"[!-9;-~]+")


def _body_start(data, start, end):
    """Offset just after the blank line ending the header at start (end if none)."""
    if start >= end:
        return end
    c = data[start]
    if c == 10:
        return start + 1
    if c == 13 and start + 1 < end and data[start + 1] == 10:
        return start + 2
    crlf = data.find(b"\n\r\n", start, end)
    lf = data.find(b"\n\n", start, crlf + 1 if crlf >= 0 else end)
    if lf >= 0:
        return lf + 2
    if crlf >= 0:
        return crlf + 3
    return end


def _parse_fields(block):
    """Header block bytes -> {lower-case name: [unfolded raw value bytes, ...]}."""
    fields = {}
    name = None
    buf = None
    for line in block.split(b"\n"):
        if line[-1:] == b"\r":
            line = line[:-1]
        if not line:
            continue
        if line[0] in (32, 9):
            if buf is not None:
                buf.append(line)
            continue
        if name is not None:
            fields.setdefault(name, []).append(b"".join(buf).strip(b" \t"))
            name = buf = None
        colon = line.find(b":")
        if colon <= 0:
            continue
        key = line[:colon].rstrip(b" \t")
        if _FIELD_NAME.fullmatch(key) is None:
            continue
        name = key.decode("ascii").lower()
        buf = [line[colon + 1:]]
    if name is not None:
        fields.setdefault(name, []).append(b"".join(buf).strip(b" \t"))
    return fields


def _raw_str(value):
    """Raw header bytes as str for the IMAP data model (UTF-8, errors replaced)."""
    return value.decode("utf-8", "replace").replace("\x00", "\ufffd")


def _text(value):
    """Bytes of unknown charset as str: UTF-8 if it mostly is, else cp1252."""
    try:
        s = value.decode("utf-8")
    except UnicodeDecodeError:
        s = value.decode("utf-8", "replace")
        bad = s.count("\ufffd")
        valid = len(s) - len(s.encode("ascii", "ignore")) - bad   # real non-ASCII chars
        if valid < bad or not valid:
            s = value.decode("cp1252", "replace")
    return s.replace("\x00", "")


def _first(fields, name):
    values = fields.get(name)
    return values[0] if values else None


# -- charsets, transfer encodings, RFC 2047 ----------------------------------

_CHARSET_ALIASES = {"gb2312": "gb18030", "gbk": "gb18030", "euc_kr": "cp949",
                    "iso8859-1": "cp1252", "ascii": None, "shift_jis": "cp932"}
_BAD_CODECS = {"unicode-escape", "raw-unicode-escape", "idna", "punycode", "undefined"}
_codec_cache = {}


def _codec(charset):
    """A usable text codec name for a MIME charset, or None (use UTF-8/Latin-1)."""
    if not charset or len(charset) > 40:
        return None
    key = charset.strip().lower()
    try:
        return _codec_cache[key]
    except KeyError:
        pass
    try:
        info = codecs.lookup(key)
        name = info.name
        if not getattr(info, "_is_text_encoding", True) or name in _BAD_CODECS:
            name = None
        else:
            name = _CHARSET_ALIASES.get(name, name)
    except (LookupError, ValueError):
        name = None
    if len(_codec_cache) < 512:
        _codec_cache[key] = name
    return name


def _decode_bytes(raw, charset):
    codec = _codec(charset)
    if codec is not None:
        try:
            s = raw.decode(codec, "replace")
            if codec == "utf-7":   # may produce lone surrogates, which JSON/SQL reject
                s = s.encode("utf-8", "replace").decode("utf-8")
            return s.replace("\x00", "")
        except Exception:  # some codecs raise whatever the error handler
            pass
    return _text(raw)


_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/]+")


def _b64(raw):
    try:
        return binascii.a2b_base64(raw)
    except (binascii.Error, ValueError):
        clean = _B64_JUNK.sub(b"", raw)
        clean = clean[:len(clean) - len(clean) % 4 + (0 if len(clean) % 4 == 1 else len(clean) % 4)]
        if len(clean) % 4:
            clean += b"=" * (4 - len(clean) % 4)
        try:
            return binascii.a2b_base64(clean)
        except (binascii.Error, ValueError):
            return b""


def _decode_cte(raw, encoding):
    if encoding == "base64":
        return _b64(raw)
    if encoding == "quoted-printable":
        return binascii.a2b_qp(raw)
    return raw


_EW = re.compile(r"=\?([^?\s]{1,64})\?([bBqQ])\?([^?]*)\?=")


def _decode_words(value):
    """Decode RFC 2047 encoded-words in a str; whitespace between them is dropped."""
    if "=?" not in value:
        return value
    out = []
    pos = 0
    pending = None       # [charset, bytearray] of adjacent words in one charset
    for m in _EW.finditer(value):
        gap = value[pos:m.start()]
        if gap and (pending is None or gap.strip()):
            if pending is not None:
                out.append(_decode_bytes(bytes(pending[1]), pending[0]))
                pending = None
            out.append(gap)
        charset = m.group(1).split("*", 1)[0].lower()
        text = m.group(3).encode("latin-1", "replace")
        if m.group(2) in "bB":
            raw = _b64(text)
        else:
            raw = binascii.a2b_qp(text, header=True)
        if pending is not None and pending[0] == charset:
            pending[1] += raw
        else:
            if pending is not None:
                out.append(_decode_bytes(bytes(pending[1]), pending[0]))
            pending = [charset, bytearray(raw)]
        pos = m.end()
    if pending is not None:
        out.append(_decode_bytes(bytes(pending[1]), pending[0]))
    out.append(value[pos:])
    return "".join(out)


def _decoded(value):
    """Raw header bytes -> unfolded, RFC 2047-decoded, capped str."""
    return _decode_words(_text(value[:_DECODED_CAP * 2]))[:_DECODED_CAP]


# -- Content-Type style values (RFC 2045, RFC 2231) --------------------------

_PARAM_TOKEN = re.compile(r"""\s*(?:
    "((?:[^"\\]|\\.)*)"?          # 1 quoted-string content
  | (\((?:[^()\\]|\\.)*\)?)       # 2 comment (not nested)
  | ([;=])                        # 3
  | ([^\s;=()"]+|.)               # 4 token, or a stray character
)""", re.S | re.X)
_UNESCAPE = re.compile(r"\\(.)", re.S)


def _parse_params(value):
    """'type/sub; a=b' -> ('type/sub', [[name, value], ...]), names lower-cased."""
    head = []
    params = []
    name = None
    words = None
    seen_eq = False

    def flush():
        if name is not None and seen_eq:
            params.append([name, " ".join(words)])

    in_head = True
    for m in _PARAM_TOKEN.finditer(value[:_PARAM_CAP]):
        quoted, comment, sep, token = m.groups()
        if comment is not None:
            continue
        if sep == ";":
            if not in_head:
                flush()
            in_head = False
            name, words, seen_eq = None, [], False
            continue
        if quoted is not None:
            word = _UNESCAPE.sub(r"\1", quoted) if "\\" in quoted else quoted
        elif sep == "=":
            if in_head:
                head.append("=")
            elif not seen_eq:
                seen_eq = True
            else:
                words.append("=")
            continue
        else:
            word = token
            if word is None:
                continue
        if in_head:
            head.append(word)
        elif name is None:
            name = word.lower()
        elif seen_eq:
            words.append(word)
        else:
            name = name + word.lower()
    if not in_head:
        flush()
    return "".join(head), params


def _param(params, key):
    """A parameter's decoded value (RFC 2231 continuations and charsets, or RFC 2047)."""
    plain = None
    pieces = {}
    for name, value in params:
        if name == key:
            if plain is None:
                plain = value
        elif name.startswith(key + "*"):
            rest = name[len(key) + 1:]
            encoded = rest.endswith("*") or rest == ""
            index = rest.rstrip("*") or "0"
            if index.isdigit() and len(index) < 4 and int(index) not in pieces:
                pieces[int(index)] = (encoded, value)
    if pieces:
        charset = None
        out = bytearray()
        for i in sorted(pieces):
            encoded, value = pieces[i]
            if encoded and i == min(pieces) and value.count("'") >= 2:
                charset, _lang, value = value.split("'", 2)
            if encoded:
                out += _unpercent(value)
            else:
                out += value.encode("utf-8", "replace")
        return _decode_bytes(bytes(out), charset)
    if plain is not None:
        return _decode_words(plain)
    return None


_PCT = re.compile(rb"%([0-9A-Fa-f]{2})")


def _unpercent(value):
    raw = value.encode("utf-8", "replace")
    if b"%" not in raw:
        return raw
    return _PCT.sub(lambda m: bytes([int(m.group(1), 16)]), raw)


# -- addresses (RFC 5322 section 3.4, IMAP ENVELOPE form) --------------------

_ADDR_TOKEN = re.compile(r"""
   ([ \t\r\n]+)                           # 1 whitespace
 | "((?:[^"\\]|\\.)*)"?                   # 2 quoted-string content
 | (\[(?:[^\[\]\\]|\\.)*\]?)              # 3 domain literal
 | ([<>@,;:.])                            # 4 special
 | (\()                                   # 5 comment start
 | ([^ \t\r\n"()\[\]<>@,;:.\\]+|.)        # 6 atom, or a stray character
""", re.S | re.X)
_COMMENT_STOP = re.compile(r"[()\\]")
_DOT_ATOM = re.compile(r"[^\x00-\x20()<>\[\]:;@\\,.\"\x7f]+(?:\.[^\x00-\x20()<>\[\]:;@\\,.\"\x7f]+)*")


def _tokenize_addresses(s):
    """-> list of (kind, text, space_before); kind: 'w' word, 'd' literal, 'c' comment, or a special."""
    toks = []
    pos = 0
    n = len(s)
    space = False
    while pos < n:
        m = _ADDR_TOKEN.match(s, pos)
        ws, quoted, literal, special, comment, atom = m.groups()
        pos = m.end()
        if ws is not None:
            space = True
            continue
        if comment is not None:
            depth = 1
            start = pos
            while depth and pos < n:
                c = _COMMENT_STOP.search(s, pos)
                if c is None:
                    pos = n
                    break
                pos = c.end()
                ch = c.group()
                if ch == "\\":
                    pos += 1
                elif ch == "(":
                    depth += 1
                else:
                    depth -= 1
            toks.append(("c", s[start:pos - 1 if depth == 0 else pos].strip(), True))
            space = True
            continue
        if quoted is not None:
            toks.append(("w", _UNESCAPE.sub(r"\1", quoted) if "\\" in quoted else quoted, space))
        elif literal is not None:
            toks.append(("d", literal, space))
        elif special is not None:
            toks.append((special, special, space))
        else:
            toks.append(("w", atom, space))
        space = False
    return toks


def _phrase(toks):
    out = []
    for kind, text, space in toks:
        if kind == "c":
            continue
        if out and space:
            out.append(" ")
        out.append(text)
    return "".join(out)


def _addr_spec(toks):
    """Tokens of local@domain -> (mailbox, host); either may be None."""
    words = [t for t in toks if t[0] != "c"]
    at = next((i for i, t in enumerate(words) if t[0] == "@"), None)
    local_toks = words if at is None else words[:at]
    local = "".join(t[1] for t in local_toks) if local_toks else None
    if local is not None and at is None and any(t[2] for t in local_toks[1:]):
        local = _phrase(local_toks)
    if local is not None and _DOT_ATOM.fullmatch(local) is None:
        local = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
    host = None
    if at is not None:
        host = "".join(t[1] for t in words[at + 1:]) or None
    return local, host


_NOT_SIMPLE = re.compile(r'["()\\:;\[\]]')
_SIMPLE_ADDR = re.compile(r"\s*(?:([^<>@]*?)\s*<\s*([^\s<>@]+)@([^\s<>@]+?)\s*>"   # name <local@host>
                          r"|([^\s<>@]+)@([^\s<>@]+))\s*")                         # local@host


def _parse_simple_addresses(s):
    """Fast path for lists without quotes, comments, groups or routes; None if not simple."""
    out = []
    for chunk in s.split(","):
        if not chunk or chunk.isspace():
            continue
        m = _SIMPLE_ADDR.fullmatch(chunk)
        if m is None:
            return None
        name, local, host, local2, host2 = m.groups()
        if local is None:
            name, local, host = None, local2, host2
        if _DOT_ATOM.fullmatch(local) is None:
            return None
        out.append([" ".join(name.split()) or None if name else None, None, local, host])
    return out


def _parse_addresses(s):
    """An address header -> IMAP address list [[name, adl, mailbox, host], ...] or None."""
    s = s[:_ADDR_CAP]
    if _NOT_SIMPLE.search(s) is None:
        simple = _parse_simple_addresses(s)
        if simple is not None:
            return simple or None
    return _parse_addresses_full(s)


def _parse_addresses_full(s):
    toks = _tokenize_addresses(s)
    out = []
    in_group = False
    i = 0
    n = len(toks)
    while i <= n:
        phrase = []
        angle = None
        comments = []
        j = i
        stop = None
        while j < n:
            kind = toks[j][0]
            if kind in (",", ";"):
                stop = kind
                break
            if kind == ":" and not in_group and angle is None:
                stop = ":"
                break
            if kind == "<":
                k = j + 1
                while k < n and toks[k][0] != ">":
                    k += 1
                if angle is None:
                    angle = toks[j + 1:k]
                j = k + 1
                continue
            if kind == "c":
                comments.append(toks[j][1])
            elif angle is None and kind != ">":
                phrase.append(toks[j])
            j += 1
        if stop == ":":
            out.append([None, None, _phrase(phrase), None])
            in_group = True
        elif angle is not None:
            adl = None
            if angle and angle[0][0] == "@":
                colon = next((k for k, t in enumerate(angle) if t[0] == ":"), None)
                if colon is not None:
                    adl = "".join(t[1] for t in angle[:colon] if t[0] != "c")
                    angle = angle[colon + 1:]
            mailbox, host = _addr_spec(angle)
            name = _phrase(phrase) or (comments[-1] if comments else None) or None
            out.append([name, adl, mailbox or _MISSING_MAILBOX, host or _MISSING_DOMAIN])
        elif any(t[0] != "c" for t in phrase):
            mailbox, host = _addr_spec(phrase)
            name = comments[-1] if comments and comments[-1] else None
            out.append([name, None, mailbox or _MISSING_MAILBOX, host or _MISSING_DOMAIN])
        if (stop == ";" or j >= n) and in_group:
            out.append([None, None, None, None])
            in_group = False
        i = j + 1
    return out or None


def _first_addr(addrs):
    for name, _adl, mailbox, host in addrs or ():
        if host is None:
            continue
        if mailbox == _MISSING_MAILBOX:
            return name, ""
        if host == _MISSING_DOMAIN:
            return name, mailbox.lower()
        return name, (mailbox + "@" + host).lower()
    return None, ""


# -- the part tree -------------------------------------------------------------

def _leaf_fields(part, fields):
    """Fill the per-part MIME fields shared by every part from its header fields."""
    encoding = _first(fields, "content-transfer-encoding")
    if encoding:
        encoding = _parse_params(_text(encoding))[0].lower()
    part["encoding"] = encoding or "7bit"
    for key, field in (("id", "content-id"), ("description", "content-description"),
                       ("md5", "content-md5"), ("location", "content-location")):
        value = _first(fields, field)
        part[key] = _raw_str(value) if value is not None else None
    disposition = _first(fields, "content-disposition")
    if disposition is not None:
        dtype, dparams = _parse_params(_raw_str(disposition))
        part["disposition"] = [dtype.lower(), dparams] if dtype else None
    else:
        dparams = []
        part["disposition"] = None
    language = _first(fields, "content-language")
    if language is not None:
        tags = [t for t in re.split(r"[\s,]+", _raw_str(language)) if t]
        part["language"] = tags or None
    else:
        part["language"] = None
    filename = _param(dparams, "filename") if dparams else None
    if filename is None:
        filename = _param(part["params"], "name")
    part["filename"] = filename[:1024] if filename else None


def _new_part(header_start, body_start, end, ctype, params):
    return {"type": ctype[0], "subtype": ctype[1], "params": params, "id": None,
            "description": None, "encoding": "7bit", "size": end - body_start,
            "lines": None, "md5": None, "disposition": None, "language": None,
            "location": None, "filename": None, "header_start": header_start,
            "body_start": body_start, "end": end}


def _count_lines(data, start, end):
    if end <= start:
        return 0
    return data.count(b"\n", start, end) + (data[end - 1] != 10)


def _plain_leaf(data, start, end):
    part = _new_part(start, start, end, ("text", "plain"), [["charset", "us-ascii"]])
    part["lines"] = _count_lines(data, start, end)
    return part


def _parse_entity(data, start, end, depth, in_digest, ctx):
    """Parse the MIME entity in data[start:end] -> (part dict, header fields)."""
    body_start = _body_start(data, start, end)
    fields = _parse_fields(data[start:min(body_start, start + _HEADER_PARSE_CAP)])
    raw_ctype = _first(fields, "content-type")
    ctype, params = (None, [])
    if raw_ctype is not None:
        ctype, params = _parse_params(_raw_str(raw_ctype))
    mtype, _, subtype = (ctype or "").lower().partition("/")
    mtype, subtype = mtype.strip(), subtype.strip()
    if not mtype or not subtype or _FIELD_NAME.fullmatch(mtype.encode("utf-8", "replace")) is None:
        if in_digest:
            mtype, subtype, params = "message", "rfc822", []
        else:
            mtype, subtype, params = "text", "plain", [["charset", "us-ascii"]]
    ctx.parts += 1
    if mtype == "multipart" or (mtype == "message" and subtype in ("rfc822", "global")):
        if depth >= MAX_DEPTH or ctx.parts >= MAX_PARTS:
            ctx.error("nesting too deep" if depth >= MAX_DEPTH else "too many MIME parts")
            mtype, subtype, params = "application", "octet-stream", []
    part = _new_part(start, body_start, end, (mtype, subtype), params)
    _leaf_fields(part, fields)
    if mtype == "multipart":
        # The boundary is used raw: RFC 2047 decoding could mangle a "=?" in it.
        boundary = next((v for k, v in params if k == "boundary"), None) or _param(params, "boundary")
        part["parts"] = _parse_multipart(data, body_start, end, (boundary or "").rstrip(),
                                         depth, subtype == "digest", ctx)
    elif mtype == "text":
        part["lines"] = _count_lines(data, body_start, end)
    elif mtype == "message" and subtype in ("rfc822", "global"):
        part["lines"] = _count_lines(data, body_start, end)
        if part["encoding"] in ("7bit", "8bit", "binary"):
            inner, inner_fields = _parse_entity(data, body_start, end, depth + 1, False, ctx)
            part["message"] = {"envelope": _envelope(inner_fields), "body": inner}
        else:
            # An encoded message cannot be served from raw offsets: keep it opaque.
            part["message"] = {"envelope": [None] * 10, "body": _plain_leaf(data, body_start, end)}
    return part, fields


def _parse_multipart(data, start, end, boundary, depth, digest, ctx):
    """Split data[start:end] at --boundary lines; the CRLF before a delimiter is its own."""
    children = []
    if boundary:
        delim = b"--" + boundary.encode("utf-8", "replace")
        pos = start
        part_start = None
        closed = False
        while True:
            hit = data.find(delim, pos, end)
            if hit < 0:
                break
            pos = hit + 1
            if hit != start and data[hit - 1] != 10:
                continue
            q = hit + len(delim)
            close = data[q:q + 2] == b"--"
            if close:
                q += 2
            while q < end and data[q] in (32, 9):
                q += 1
            if q < end and data[q] == 13 and q + 1 < end and data[q + 1] == 10:
                line_end = q + 2
            elif q < end and data[q] == 10:
                line_end = q + 1
            elif q >= end:
                line_end = end
            else:
                continue
            if part_start is not None:
                if ctx.parts >= MAX_PARTS - 1:   # keep room for the last, unsplit part
                    ctx.error("too many MIME parts")
                    break
                part_end = hit
                if hit > start and data[hit - 1] == 10:
                    part_end -= 2 if hit - 1 > start and data[hit - 2] == 13 else 1
                children.append(_parse_entity(data, part_start, max(part_start, part_end),
                                              depth + 1, digest, ctx)[0])
            part_start = line_end
            pos = line_end
            if close:
                closed = True
                break
        if part_start is not None and not closed:
            # Unterminated: the last part runs to the end of the enclosing body.
            children.append(_parse_entity(data, part_start, end, depth + 1, digest, ctx)[0])
    else:
        ctx.error("multipart without boundary")
    if not children:
        if boundary:
            ctx.error("multipart without parts")
        children.append(_plain_leaf(data, start, end))
    return children


# -- envelope and summary fields -----------------------------------------------

def _envelope(fields):
    """IMAP ENVELOPE: [date, subject, from, sender, reply_to, to, cc, bcc, in_reply_to, message_id]."""
    def string(name):
        value = _first(fields, name)
        return _raw_str(value) if value is not None else None

    def addresses(name):
        value = _first(fields, name)
        return _parse_addresses(_raw_str(value)) if value is not None else None

    sender_from = addresses("from")
    sender = addresses("sender") or sender_from
    reply_to = addresses("reply-to") or sender_from
    return [string("date"), string("subject"), sender_from, sender, reply_to,
            addresses("to"), addresses("cc"), addresses("bcc"),
            string("in-reply-to"), string("message-id")]


def _parse_date(value):
    try:
        t = parsedate_tz(value)
        if t is None or not (1 <= t[0] <= 9999 and 1 <= t[1] <= 12 and 1 <= t[2] <= 31):
            return None
        return int(calendar.timegm(tuple(t[:6]) + (0, 1, 0)) - (t[9] or 0))
    except Exception:  # parsedate_tz has raised on odd input in the past
        return None


_MSGID = re.compile(r"<([^<>]*)>")


def _msgids(value):
    ids = []
    for m in _MSGID.finditer(value):
        inner = "".join(m.group(1).split())
        if inner:
            ids.append("<" + inner + ">")
    if not ids:
        ids = ["<" + w.strip("<>") + ">" for w in value.split() if "@" in w.strip("<>")]
    return ids


_WS = re.compile(r"\s+")
_BLOB = r"\[[^\[\]]*\]\s*"
_LEADER = re.compile(r"(?:\s+|(?:" + _BLOB + r")*(?:re|fwd?)\s*(?:" + _BLOB + r")?:)", re.I)
_BLOB_RE = re.compile(_BLOB)


def base_subject(subject):
    """The RFC 5256 base subject, lower-cased, for SORT and THREAD."""
    s = _WS.sub(" ", subject[:2048])
    while True:
        while True:                      # step 2: subj-trailer
            s = s.rstrip()
            if s[-5:].lower() == "(fwd)":
                s = s[:-5]
            else:
                break
        while True:                      # steps 3-5: subj-leader and subj-blob
            m = _LEADER.match(s)
            if m is not None and m.end():
                s = s[m.end():]
                continue
            m = _BLOB_RE.match(s)
            if m is not None and s[m.end():]:
                s = s[m.end():]
                continue
            break
        if s[:5].lower() == "[fwd:" and s.endswith("]"):   # step 6
            s = s[5:-1]
            continue
        return s.strip().lower()


# -- text extraction -----------------------------------------------------------

_HTML_SKIP = re.compile(r"<(?:(script|style)\b|!--)", re.I)
_HTML_END = {"script": re.compile(r"</script\s*>", re.I), "style": re.compile(r"</style\s*>", re.I)}
_HTML_TAG = re.compile(r"<[^<>]*>")


def _strip_html(s):
    """HTML to plain text: drop scripts, styles, comments and tags; unescape entities."""
    out = []
    pos = 0
    while True:
        m = _HTML_SKIP.search(s, pos)
        if m is None:
            out.append(s[pos:])
            break
        out.append(s[pos:m.start()])
        if m.group(1):
            e = _HTML_END[m.group(1).lower()].search(s, m.end())
            pos = e.end() if e is not None else len(s)
        else:
            e = s.find("-->", m.end())
            pos = e + 3 if e >= 0 else len(s)
        out.append(" ")
    # Every tag becomes a space: splits words at inline tags, but is 2x faster
    # than telling block from inline tags.
    s = _HTML_TAG.sub(" ", "".join(out))
    return html.unescape(s)


def _part_text(data, part):
    raw = data[part["body_start"]:min(part["end"], part["body_start"] + _PART_RAW_CAP)]
    charset = next((v for k, v in part["params"] if k == "charset"), None)
    s = _decode_bytes(_decode_cte(raw, part["encoding"]), charset)
    if part["subtype"] == "html":
        s = _strip_html(s)
    return " ".join(s.split())


def _is_attachment(part):
    d = part["disposition"]
    return (d is not None and d[0] == "attachment") or bool(part.get("filename"))


def _summarise_body(data, root, header_text):
    """-> (preview, search text, attachment count)."""
    attachments = 0
    texts = []
    budget = TEXT_CAP - sum(len(t) for t in header_text)
    plain = html_part = None
    leaves = []
    stack = [(root, False)]
    while stack:
        p, inside = stack.pop()   # inside: within an attachment already counted
        if "parts" in p:
            stack.extend((c, inside) for c in reversed(p["parts"]))
            continue
        attached = _is_attachment(p)
        if attached and not inside:
            attachments += 1
        if "message" in p:
            stack.append((p["message"]["body"], inside or attached))
        elif p["type"] == "text":
            leaves.append(p)
            if not (attached or inside):
                if p["subtype"] == "plain" and plain is None:
                    plain = p
                elif p["subtype"] == "html" and html_part is None:
                    html_part = p
    preview_part = plain or html_part
    preview = ""
    for p in leaves:
        if budget <= 0 and p is not preview_part:
            continue
        t = _part_text(data, p)
        if p is preview_part:
            preview = t[:PREVIEW_LEN]
        if budget > 0 and t:
            texts.append(t)
            budget -= len(t)
    text = "\n".join(header_text + texts)
    if len(text) > TEXT_CAP // 4:
        text = text.encode("utf-8", "replace")[:TEXT_CAP].decode("utf-8", "ignore")
    return preview, text, attachments


# -- entry point -----------------------------------------------------------------

def parse_message(data: bytes) -> dict:
    """Parse raw message bytes into the stored summary dict; never raises."""
    try:
        return _parse(bytes(data))
    except Exception as e:  # never let one odd message break delivery
        return _fallback(data, "parse failed: %s" % (type(e).__name__,))


def _parse(data):
    ctx = _Ctx()
    if not data:
        ctx.error("empty message")
    root, fields = _parse_entity(data, 0, len(data), 0, False, ctx)
    envelope = _envelope(fields)
    headers = {name: [_decoded(v) for v in fields[name]] for name in _SUMMARY_FIELDS if name in fields}
    subject = headers["subject"][0].strip() if "subject" in headers else ""
    from_name, from_addr = _first_addr(envelope[2])
    raw_from = _first(fields, "from")
    if raw_from is not None and from_name is not None:
        try:
            raw_from.decode("utf-8")
        except UnicodeDecodeError:   # 8-bit name: Latin-1 beats U+FFFD for display
            from_name = _first_addr(_parse_addresses(_text(raw_from)))[0]
    date = _first(fields, "date")
    message_id = _msgids(_text(_first(fields, "message-id") or b""))
    in_reply_to = _msgids(_text(_first(fields, "in-reply-to") or b""))
    references = _msgids(_text(_first(fields, "references") or b""))
    if len(references) > 100:   # keep the thread root and the nearest ancestors
        references = references[:1] + references[-99:]
    header_text = [v for name in ("subject", "from", "to", "cc") for v in headers.get(name, ())]
    preview, text, attachments = _summarise_body(data, root, header_text)
    return {
        "size": len(data),
        "envelope": envelope,
        "body": root,
        "headers": headers,
        "subject": subject,
        "sort_subject": base_subject(subject),
        "from_addr": from_addr,
        "to_addr": _first_addr(envelope[5])[1],
        "cc_addr": _first_addr(envelope[6])[1],
        "from_name": _decode_words(from_name)[:_DECODED_CAP] if from_name else "",
        "date": _parse_date(_text(date)) if date is not None else None,
        "message_id": message_id[0] if message_id else None,
        "in_reply_to": in_reply_to[0] if in_reply_to else None,
        "references": references,
        "preview": preview,
        "text": text,
        "attachments": attachments,
        "error": "; ".join(ctx.errors[:3]) or None,
    }


def _fallback(data, error):
    try:
        size = len(data)
    except Exception:
        size = 0
    body = {"type": "text", "subtype": "plain", "params": [["charset", "us-ascii"]], "id": None,
            "description": None, "encoding": "7bit", "size": size, "lines": 0, "md5": None,
            "disposition": None, "language": None, "location": None, "filename": None,
            "header_start": 0, "body_start": 0, "end": size}
    try:
        body["lines"] = _count_lines(data, 0, size)
    except Exception:
        pass
    return {"size": size, "envelope": [None] * 10, "body": body, "headers": {},
            "subject": "", "sort_subject": "", "from_addr": "", "to_addr": "", "cc_addr": "",
            "from_name": "", "date": None, "message_id": None, "in_reply_to": None,
            "references": [], "preview": "", "text": "", "attachments": 0, "error": error}
