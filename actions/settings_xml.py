"""Reads and edits the IsSlave and ServerGuid elements of a Redstor Settings.xml, changing only the element's text."""

from __future__ import annotations

import codecs
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from lxml import etree

from actions.errors import ExecutionError
from actions.guid import mask_guid, mask_guids, normalise_guid
from actions.guid import otp_from_guid as otp_from_guid  # the one-time password, named here for its readers

FILE = "Settings.xml"
IS_SLAVE = "IsSlave"
SERVER_GUID = "ServerGuid"

_XML_SPACE = " \t\r\n"
_DECLARED_ENCODING = re.compile(rb"""<\?xml[^>]*?\sencoding\s*=\s*["']([A-Za-z][A-Za-z0-9._-]*)["']""")
_START_TAG = re.compile(r"""<([^\s/>]+)(?:[^>"']|"[^"]*"|'[^']*')*?(/?)>""")
_END_TAG = re.compile(r"</([^\s>]+)\s*>")
_ATTRIBUTE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9._-]*")
_SIBLING_ANCHORS = (SERVER_GUID, "ServerName")
_ATTRIBUTE_ESCAPES = (("&", "&amp;"), ("<", "&lt;"), ('"', "&quot;"), ("\t", "&#9;"), ("\n", "&#10;"), ("\r", "&#13;"))


class SettingsXmlError(ExecutionError):
    """Settings.xml could not be read or edited safely; nothing was changed."""


@dataclass
class _Element:
    """Where one element sits in the decoded text (indices into the text, not the bytes)."""

    name: str
    start: int
    content_start: int
    content_end: int
    end: int
    parent: int | None
    self_closing: bool

    @property
    def local_name(self) -> str:
        return self.name.rpartition(":")[2]


@dataclass(frozen=True)
class _Document:
    """A parsed Settings.xml: the original bytes, their decoded text and both views of its elements."""

    content: bytes
    bom_length: int
    codec: str
    text: str
    elements: list[_Element]
    nodes: list[etree._Element]
    markup: list[tuple[int, int]]

    def byte_offset(self, index: int) -> int:
        return self.bom_length + len(self.text[:index].encode(self.codec))

    def splice(self, start: int, end: int, replacement: str) -> bytes:
        """The original bytes with text[start:end] replaced; every other byte is copied unchanged."""
        head, tail = self.byte_offset(start), self.byte_offset(end)
        return self.content[:head] + replacement.encode(self.codec) + self.content[tail:]


def read_database_connection(content: bytes) -> str | None:
    """The AccountServer's DatabaseConnection (a connection string naming its StoragePlatform database), or
    None when the element is absent. It may hold a password: callers show only server and database names."""
    document = _load(content)
    index = _find_one(document, "DatabaseConnection", required=False)
    if index is None:
        return None
    return _text_of(document, index, "DatabaseConnection").strip() or None


def read_is_slave(content: bytes) -> bool | None:
    """The IsSlave value (True or False, case-insensitive), or None when the element is absent (a Master)."""
    document = _load(content)
    index = _find_one(document, IS_SLAVE, required=False)
    if index is None:
        return None
    return _parse_bool(_text_of(document, index, IS_SLAVE))


def read_server_guid(content: bytes) -> str:
    """The ServerGuid as written in the file (surrounding whitespace removed); compare with normalise_guid."""
    document = _load(content)
    index = _find_one(document, SERVER_GUID, required=True)
    assert index is not None
    value = _text_of(document, index, SERVER_GUID)
    if not value:
        raise SettingsXmlError(f"{FILE}: ServerGuid is empty")
    try:
        normalise_guid(value)
    except ValueError as exc:
        raise SettingsXmlError(f"{FILE}: ServerGuid is not a GUID ({len(value)} characters)") from exc
    return value


def set_is_slave(
    content: bytes,
    value: bool,
    *,
    add_if_absent: bool,
    attributes: Mapping[str, str] | None = None,
) -> bytes:
    """Settings.xml with IsSlave set to `True`/`False`, changing only that element's text.

    An unchanged value returns the same bytes. When the element is absent and `add_if_absent`, setting
    True adds `<IsSlave ...attributes>True</IsSlave>` as a child of the root after the ServerGuid /
    ServerName line (else after the last child), with the file's indentation and line ending; setting
    False changes nothing, since absent means False. `attributes` apply only to an added element.
    """
    added = _element_markup(IS_SLAVE, _bool_text(True), attributes or {})
    document = _load(content)
    index = _find_one(document, IS_SLAVE, required=False)
    if index is None:
        if not add_if_absent:
            raise SettingsXmlError(f"{FILE} has no IsSlave element")
        if not value:
            return content
        result = _insert_in_root(document, added)
    else:
        if _parse_bool(_text_of(document, index, IS_SLAVE)) == value:
            return content
        result = _replace_text(document, index, _bool_text(value))
    if read_is_slave(result) is not value:
        raise SettingsXmlError(f"{FILE}: IsSlave did not read back as {_bool_text(value)} after editing")
    return result


def settings_change(old: bytes, new: bytes, *, filename: str, element: str = IS_SLAVE) -> str:
    """What an edit of Settings.xml changes, for Slack, the stored preview and the audit record; "" if nothing.

    Only the edited element, before and after, the file's ServerGuid with all but its last 12 digits
    masked and the start of the file's SHA-256: no other line of the file leaves the host (other elements
    may hold SMTP passwords, connection strings, keys), whatever their names.
    """
    if old == new:
        return ""
    try:
        guid = mask_guid(read_server_guid(old))
    except SettingsXmlError:
        guid = "not found"
    absent = f"(no {element} element)"
    # The file's digest binds an approval to the whole file as it was shown: an edit anywhere voids it.
    digest = hashlib.sha256(old).hexdigest()[:16]
    lines = [
        f"{filename} (ServerGuid {guid}; file SHA-256 {digest}…):",
        f"- {_element_markup_in(old, element) or absent}",
        f"+ {_element_markup_in(new, element) or absent}",
    ]
    return mask_guids("\n".join(lines))


def _element_markup_in(content: bytes, name: str) -> str | None:
    """The markup of the one element called ``name`` on one line, or None when it is absent."""
    document = _load(content)
    index = _find_one(document, name, required=False)
    if index is None:
        return None
    found = document.elements[index]
    return " ".join(document.text[found.start : found.end].split())


def _load(content: bytes) -> _Document:
    if not isinstance(content, bytes):
        raise TypeError(f"Settings.xml content must be bytes, not {type(content).__name__}")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    try:
        root = etree.fromstring(content, parser)
    except etree.XMLSyntaxError as exc:
        message = " ".join(mask_guids(str(exc.msg)).split())  # libxml2's messages may span lines
        raise SettingsXmlError(f"{FILE} is not well-formed XML: line {exc.lineno}: {message}") from exc
    if root.getroottree().docinfo.doctype:
        raise SettingsXmlError(f"{FILE} has a DOCTYPE declaration; refusing to read or edit it")
    bom_length, codec = _detect_encoding(content)
    text = _decode_body(content, bom_length, codec)
    elements, markup = _scan(text)
    nodes = list(root.iter(etree.Element))
    if [element.local_name for element in elements] != [etree.QName(node).localname for node in nodes]:
        raise SettingsXmlError(f"{FILE}: could not locate its elements reliably; refusing to edit it")
    return _Document(content, bom_length, codec, text, elements, nodes, markup)


def _detect_encoding(content: bytes) -> tuple[int, str]:
    """The byte-order mark's length and the codec of the text after it."""
    for bom, codec in (
        (codecs.BOM_UTF8, "utf-8"),
        (codecs.BOM_UTF32_LE, "utf-32-le"),
        (codecs.BOM_UTF32_BE, "utf-32-be"),
        (codecs.BOM_UTF16_LE, "utf-16-le"),
        (codecs.BOM_UTF16_BE, "utf-16-be"),
    ):
        if content.startswith(bom):
            return len(bom), codec
    if content.startswith(b"<\x00?\x00"):
        return 0, "utf-16-le"
    if content.startswith(b"\x00<\x00?"):
        return 0, "utf-16-be"
    declared = _DECLARED_ENCODING.match(content)
    name = declared.group(1).decode("ascii") if declared else "utf-8"
    try:
        codec = codecs.lookup(name).name
    except LookupError as exc:
        raise SettingsXmlError(f"{FILE} declares an unsupported encoding {name!r}") from exc
    if codec.startswith(("utf-16", "utf-32")):
        raise SettingsXmlError(f"{FILE} declares {name} but is not encoded that way")
    return 0, codec


def _decode_body(content: bytes, bom_length: int, codec: str) -> str:
    try:
        return content[bom_length:].decode(codec)
    except UnicodeDecodeError as exc:
        raise SettingsXmlError(f"{FILE} is not valid {codec}: byte {bom_length + exc.start}") from exc


def _decode(content: bytes) -> str:
    bom_length, codec = _detect_encoding(content)
    return _decode_body(content, bom_length, codec)


def _scan(text: str) -> tuple[list[_Element], list[tuple[int, int]]]:
    """Every element's position in document order, and the spans of comments, PIs and CDATA sections.

    The text has already been parsed by lxml, so this only has to tell markup apart, not validate it.
    """
    elements: list[_Element] = []
    markup: list[tuple[int, int]] = []
    open_elements: list[int] = []
    position = 0
    try:
        while (start := text.find("<", position)) >= 0:
            if text.startswith("<!--", start):
                position = text.index("-->", start + 4) + 3
                markup.append((start, position))
            elif text.startswith("<![CDATA[", start):
                position = text.index("]]>", start + 9) + 3
                markup.append((start, position))
            elif text.startswith("<?", start):
                position = text.index("?>", start + 2) + 2
                markup.append((start, position))
            elif text.startswith("<!", start):
                raise SettingsXmlError(f"{FILE} has a DOCTYPE declaration; refusing to read or edit it")
            elif text.startswith("</", start):
                end_tag = _END_TAG.match(text, start)
                element = elements[open_elements.pop()]
                if end_tag is None or end_tag.group(1) != element.name:
                    raise ValueError("unbalanced end tag")
                position = end_tag.end()
                element.content_end, element.end = start, position
            else:
                start_tag = _START_TAG.match(text, start)
                if start_tag is None:
                    raise ValueError("unreadable start tag")
                position = start_tag.end()
                self_closing = start_tag.group(2) == "/"
                parent = open_elements[-1] if open_elements else None
                elements.append(_Element(start_tag.group(1), start, position, position, position, parent, self_closing))
                if not self_closing:
                    open_elements.append(len(elements) - 1)
    except (ValueError, IndexError) as exc:
        raise SettingsXmlError(f"{FILE}: could not locate its elements reliably; refusing to edit it") from exc
    if open_elements:
        raise SettingsXmlError(f"{FILE}: could not locate its elements reliably; refusing to edit it")
    return elements, markup


def _find_one(document: _Document, name: str, *, required: bool) -> int | None:
    matches = [i for i, element in enumerate(document.elements) if element.local_name == name]
    if len(matches) > 1:
        raise SettingsXmlError(f"{FILE} has {len(matches)} {name} elements; expected exactly one")
    if not matches:
        if required:
            raise SettingsXmlError(f"{FILE} has no {name} element")
        return None
    return matches[0]


def _text_of(document: _Document, index: int, name: str) -> str:
    node = document.nodes[index]
    if any(isinstance(child.tag, str) for child in node):
        raise SettingsXmlError(f"{name} has child elements")
    if len(node):
        raise SettingsXmlError(f"{name} contains a comment or processing instruction; expected only its value")
    return (node.text or "").strip(_XML_SPACE)


def _parse_bool(value: str) -> bool:
    # The platform reads this with .NET's bool.Parse, which ignores case.
    if value.lower() == "true":
        return True
    if value.lower() == "false":
        return False
    raise SettingsXmlError(f"IsSlave has value {value!r}; expected True or False")


def _bool_text(value: bool) -> str:
    return "True" if value else "False"


def _replace_text(document: _Document, index: int, value: str) -> bytes:
    """Replace the element's value, keeping any whitespace around it; references or CDATA are replaced whole."""
    element = document.elements[index]
    start, end = element.content_start, element.content_end
    raw = document.text[start:end]
    if "&" not in raw and "<" not in raw:
        start += len(raw) - len(raw.lstrip(_XML_SPACE))
        end -= len(raw) - len(raw.rstrip(_XML_SPACE))
    return document.splice(start, end, value)


def _insert_in_root(document: _Document, markup: str) -> bytes:
    root = document.elements[0]
    if root.self_closing:
        raise SettingsXmlError(f"{FILE}: the root element <{root.name}/> is empty; cannot add IsSlave to it")
    text = document.text
    children = [i for i, element in enumerate(document.elements) if element.parent == 0]
    anchors = [i for i in children if document.elements[i].local_name in _SIBLING_ANCHORS]
    if anchors or children:
        anchor = document.elements[max(anchors) if anchors else children[-1]]
        indent = _indent_before(text, anchor.start)
        if indent is None:
            return document.splice(anchor.end, anchor.end, markup)
        position, newline = _end_of_line(document, anchor.end, limit=root.content_end)
        return document.splice(position, position, newline + indent + markup)
    content = text[root.content_start : root.content_end]
    if "\n" not in content:
        return document.splice(root.content_start, root.content_start, markup)
    indent = (_indent_before(text, root.start) or "") + "  "
    return document.splice(root.content_start, root.content_start, _dominant_newline(text) + indent + markup)


def _indent_before(text: str, index: int) -> str | None:
    """The whitespace that starts the line up to `index`, or None when something else precedes it on that line."""
    line_start = text.rfind("\n", 0, index) + 1
    prefix = text[line_start:index]
    return prefix if prefix.strip(" \t") == "" else None


def _end_of_line(document: _Document, index: int, *, limit: int) -> tuple[int, str]:
    """Where a new line may start after `index` (past a trailing comment on the same line), and its line ending."""
    text = document.text
    newline_at = text.find("\n", index)
    if newline_at < 0:
        return index, _dominant_newline(text)
    position = newline_at - 1 if newline_at > index and text[newline_at - 1] == "\r" else newline_at
    newline = text[position : newline_at + 1]
    starts_element = any(index <= element.start < position for element in document.elements)
    inside_markup = any(start < position < end for start, end in document.markup)
    if position > limit or starts_element or inside_markup:
        return index, newline
    return position, newline


def _dominant_newline(text: str) -> str:
    return "\r\n" if text.count("\r\n") * 2 >= text.count("\n") and "\r\n" in text else "\n"


def _element_markup(name: str, value: str, attributes: Mapping[str, str]) -> str:
    parts = [name]
    for key, attribute_value in attributes.items():
        if not _ATTRIBUTE_NAME.fullmatch(key):
            raise ValueError(f"not an XML attribute name: {key!r}")
        parts.append(f'{key}="{_escape_attribute(attribute_value)}"')
    return f"<{' '.join(parts)}>{value}</{name}>"


def _escape_attribute(value: str) -> str:
    for char, reference in _ATTRIBUTE_ESCAPES:
        value = value.replace(char, reference)
    return value
