"""A YAML subset reader for the deployment files, for machines without PyYAML.

It reads what docker/compose.yaml and docker/k8s/*.yaml use: block mappings
and sequences, plain and quoted scalars, one-line flow collections ([a, b],
{k: v}), literal and folded block scalars (|, |-, >), comments and `---`
document separators. Plain scalars resolve as PyYAML's YAML 1.1 resolver does
for ints, floats, booleans and null. Anything else (anchors, aliases, tags,
multi-line plain or flow scalars) is an error naming the line, never a silent
misreading. When PyYAML is installed the suite checks that both readers agree
on every file (tests/deploy/test_k8s.py, yaml_reader_agrees).

Python 3 standard library only.
"""

import re


class YamlError(Exception):
    pass


_INT = re.compile(r"^[-+]?(0|[1-9][0-9_]*)$")
_FLOAT = re.compile(r"^[-+]?([0-9][0-9_]*)?\.[0-9_]*([eE][-+][0-9]+)?$")
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False,
         "FALSE": False, "yes": True, "Yes": True, "YES": True, "no": False, "No": False,
         "NO": False, "on": True, "On": True, "ON": True, "off": False, "Off": False,
         "OFF": False}
_NULL = {"", "~", "null", "Null", "NULL"}
_ESCAPES = {"0": "\0", "a": "\a", "b": "\b", "t": "\t", "\t": "\t", "n": "\n", "v": "\v",
            "f": "\f", "r": "\r", "e": "\x1b", " ": " ", '"': '"', "/": "/", "\\": "\\",
            "N": "\x85", "_": "\xa0"}


def _plain(text, where):
    if text[:1] in ("&", "*", "!", "%", "@", "`"):
        raise YamlError("%s: unsupported YAML (anchor, alias, tag or reserved): %r" % (where, text))
    if text in _NULL:
        return None
    if text in _BOOL:
        return _BOOL[text]
    if _INT.match(text):
        return int(text.replace("_", ""))
    if _FLOAT.match(text) and text not in (".", "-.", "+."):
        return float(text.replace("_", ""))
    return text


def _double(s, i, where):
    """Reads a double-quoted scalar starting at s[i] == '"'; returns (str, next index)."""
    out = []
    i += 1
    while i < len(s):
        ch = s[i]
        if ch == '"':
            return "".join(out), i + 1
        if ch == "\\":
            i += 1
            if i >= len(s):
                break
            e = s[i]
            if e in _ESCAPES:
                out.append(_ESCAPES[e])
            elif e in "xuU":
                n = {"x": 2, "u": 4, "U": 8}[e]
                out.append(chr(int(s[i + 1:i + 1 + n], 16)))
                i += n
            else:
                raise YamlError("%s: unknown escape \\%s" % (where, e))
            i += 1
            continue
        out.append(ch)
        i += 1
    raise YamlError("%s: unterminated double-quoted string (multi-line strings are unsupported)"
                    % where)


def _single(s, i, where):
    out = []
    i += 1
    while i < len(s):
        if s[i] == "'":
            if s[i + 1:i + 2] == "'":
                out.append("'")
                i += 2
                continue
            return "".join(out), i + 1
        out.append(s[i])
        i += 1
    raise YamlError("%s: unterminated single-quoted string" % where)


def _strip_comment(s):
    """s without a trailing comment (a # after whitespace, outside quotes)."""
    i, quote = 0, None
    while i < len(s):
        ch = s[i]
        if quote == '"' and ch == "\\":
            i += 2
            continue
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'" and (i == 0 or s[i - 1] in " \t[{,:"):
            quote = ch
        elif ch == "#" and (i == 0 or s[i - 1] in " \t"):
            return s[:i].rstrip()
        i += 1
    return s.rstrip()


def _key_split(s, where):
    """Splits "key: value" (or "key:") at the first mapping colon outside quotes
    and brackets; returns (key, rest) or None when s is not a mapping entry."""
    if s[:1] == '"':
        key, i = _double(s, 0, where)
    elif s[:1] == "'":
        key, i = _single(s, 0, where)
    elif s[:1] in "[{":
        return None
    else:
        i = 0
        while i < len(s):
            if s[i] == ":" and (i + 1 == len(s) or s[i + 1] in " \t"):
                return s[:i].rstrip(), s[i + 1:].strip()
            i += 1
        return None
    rest = s[i:].lstrip()
    if rest == ":" or rest.startswith(": ") or rest.startswith(":\t"):
        return key, rest[1:].strip()
    return None


def _flow(s, i, where):
    """Reads a flow value at s[i]; returns (value, next index)."""
    while i < len(s) and s[i] == " ":
        i += 1
    if i >= len(s):
        raise YamlError("%s: flow collection not closed on its line" % where)
    ch = s[i]
    if ch == "[":
        items, i = [], i + 1
        while True:
            while i < len(s) and s[i] == " ":
                i += 1
            if i < len(s) and s[i] == "]":
                return items, i + 1
            v, i = _flow(s, i, where)
            items.append(v)
            while i < len(s) and s[i] == " ":
                i += 1
            if i < len(s) and s[i] == ",":
                i += 1
            elif i < len(s) and s[i] == "]":
                return items, i + 1
            else:
                raise YamlError("%s: bad flow sequence" % where)
    if ch == "{":
        obj, i = {}, i + 1
        while True:
            while i < len(s) and s[i] == " ":
                i += 1
            if i < len(s) and s[i] == "}":
                return obj, i + 1
            k, i = _flow_scalar(s, i, where, key=True)
            while i < len(s) and s[i] == " ":
                i += 1
            if s[i:i + 1] != ":":
                raise YamlError("%s: bad flow mapping" % where)
            v, i = _flow(s, i + 1, where)
            obj[k] = v
            while i < len(s) and s[i] == " ":
                i += 1
            if i < len(s) and s[i] == ",":
                i += 1
            elif i < len(s) and s[i] == "}":
                return obj, i + 1
            else:
                raise YamlError("%s: bad flow mapping" % where)
    return _flow_scalar(s, i, where)


def _flow_scalar(s, i, where, key=False):
    if s[i] == '"':
        return _double(s, i, where)
    if s[i] == "'":
        return _single(s, i, where)
    j = i
    while j < len(s) and s[j] not in ",]}" and not (s[j] == ":" and (key or s[j + 1:j + 2] in
                                                                     (" ", ""))):
        j += 1
    text = s[i:j].strip()
    return (text if key else _plain(text, where)), j


def _scalar(text, where):
    """A value on the line of its key or dash: quoted, flow or plain."""
    if text[:1] in "[{":
        v, i = _flow(text, 0, where)
    elif text[:1] == '"':
        v, i = _double(text, 0, where)
    elif text[:1] == "'":
        v, i = _single(text, 0, where)
    else:
        return _plain(text, where)
    if text[i:].strip():
        raise YamlError("%s: text after a value: %r" % (where, text[i:]))
    return v


class _Reader:
    def __init__(self, raw_lines, name, first_line):
        self.raw = raw_lines
        self.name = name
        self.first = first_line
        # (indent, content, raw index) of every line that holds something.
        self.lines = []
        for n, raw in enumerate(raw_lines):
            if "\t" in raw[:len(raw) - len(raw.lstrip())]:
                raise YamlError("%s: a tab in the indentation" % self.where(n))
            content = _strip_comment(raw.strip())
            if content:
                self.lines.append((len(raw) - len(raw.lstrip(" ")), content, n))
        self.pos = 0

    def where(self, raw_index):
        return "%s:%d" % (self.name, self.first + raw_index + 1)

    def peek(self):
        return self.lines[self.pos] if self.pos < len(self.lines) else None

    def block(self, indent):
        """The node whose lines are at exactly indent."""
        ind, content, n = self.peek()
        if content == "-" or content.startswith("- "):
            return self.sequence(ind)
        if _key_split(content, self.where(n)) is not None:
            return self.mapping(ind)
        self.pos += 1
        nxt = self.peek()
        if nxt and nxt[0] > ind:
            raise YamlError("%s: multi-line plain scalars are unsupported" % self.where(nxt[2]))
        return _scalar(content, self.where(n))

    def value_after(self, text, indent, n, in_seq=False):
        """The value of a key or dash whose rest of line is text."""
        where = self.where(n)
        if text[:1] in ("|", ">"):
            return self.block_scalar(text, indent, n)
        if text:
            nxt = self.peek()
            if nxt and nxt[0] > indent:
                raise YamlError("%s: multi-line plain scalars are unsupported" % self.where(nxt[2]))
            return _scalar(text, where)
        nxt = self.peek()
        if nxt is None:
            return None
        if nxt[0] > indent:
            return self.block(nxt[0])
        # A sequence may sit at its key's own indentation.
        if not in_seq and nxt[0] == indent and (nxt[1] == "-" or nxt[1].startswith("- ")):
            return self.sequence(indent)
        return None

    def mapping(self, indent):
        out = {}
        while True:
            line = self.peek()
            if line is None or line[0] < indent:
                return out
            ind, content, n = line
            if ind > indent:
                raise YamlError("%s: unexpected indentation" % self.where(n))
            if content == "-" or content.startswith("- "):
                return out  # the sequence this mapping sits in goes on
            kv = _key_split(content, self.where(n))
            if kv is None:
                raise YamlError("%s: expected `key: value`, got %r" % (self.where(n), content))
            key, rest = kv
            if key in out:
                raise YamlError("%s: duplicate key %r" % (self.where(n), key))
            if key == "<<":
                raise YamlError("%s: merge keys are unsupported" % self.where(n))
            self.pos += 1
            out[_plain(key, self.where(n)) if key[:1] not in "\"'" else key] = \
                self.value_after(rest, indent, n)

    def sequence(self, indent):
        out = []
        while True:
            line = self.peek()
            if line is None or line[0] < indent:
                return out
            ind, content, n = line
            if ind > indent:
                raise YamlError("%s: unexpected indentation" % self.where(n))
            if not (content == "-" or content.startswith("- ")):
                return out
            rest = content[1:].lstrip(" ")
            item_indent = ind + (len(content) - len(rest))
            if rest and _key_split(rest, self.where(n)) is not None and rest[:1] not in "[{":
                # "- key: value" opens a mapping whose keys line up after the dash.
                self.lines[self.pos] = (item_indent, rest, n)
                out.append(self.mapping(item_indent))
            elif rest == "-" or rest.startswith("- "):
                self.lines[self.pos] = (item_indent, rest, n)
                out.append(self.sequence(item_indent))
            else:
                self.pos += 1
                out.append(self.value_after(rest, ind, n, in_seq=True))

    def block_scalar(self, header, indent, n):
        m = re.match(r"^([|>])([-+]?)$", header)
        if not m:
            raise YamlError("%s: unsupported block scalar header %r" % (self.where(n), header))
        style, chomp = m.groups()
        body = []
        k = n + 1
        block_indent = None
        while k < len(self.raw):
            raw = self.raw[k]
            if raw.strip() == "":
                body.append("")
                k += 1
                continue
            ind = len(raw) - len(raw.lstrip(" "))
            if block_indent is None:
                if ind <= indent:
                    break
                block_indent = ind
            if ind < block_indent:
                break
            body.append(raw[block_indent:])
            k += 1
        # Skip the structural lines the block scalar consumed.
        while self.pos < len(self.lines) and self.lines[self.pos][2] < k:
            self.pos += 1
        while body and body[-1] == "" and chomp != "+":
            body.pop()
        if style == "|":
            text = "\n".join(body)
        else:
            text = ""
            for i, line in enumerate(body):
                if i and line and body[i - 1]:
                    text += " "
                elif i:
                    text += "\n"
                text += line
        if chomp == "-" or not body:
            return text
        return text + "\n"


def load_all(text, name="<yaml>"):
    """Every document of text, as Python values."""
    docs, chunk, first = [], [], 0
    lines = text.split("\n")
    for n, line in enumerate(lines + ["---"]):
        if line.rstrip() == "---" or line.startswith("--- "):
            if any(_strip_comment(l.strip()) for l in chunk):
                r = _Reader(chunk, name, first)
                ind = r.peek()[0]
                doc = r.block(ind)
                if r.peek() is not None:
                    raise YamlError("%s: text after the document's end" % r.where(r.peek()[2]))
                docs.append(doc)
            chunk, first = [], n + 1
            continue
        if line.rstrip() == "...":
            continue
        chunk.append(line)
    return docs
