"""Tests for reading and byte-preserving editing of Settings.xml (IsSlave, ServerGuid, masked diffs, OTPs)."""

from __future__ import annotations

import codecs
import hashlib
import random
import re
import uuid
from dataclasses import dataclass

import pytest
from lxml import etree

from actions.settings_xml import (
    SettingsXmlError,
    mask_guid,
    normalise_guid,
    otp_from_guid,
    read_is_slave,
    read_server_guid,
    set_is_slave,
    settings_change,
)
from bot.errors import ExecutionError
from tests.support.paths import SPEC

MASTER = (SPEC / "sample-settings-accountserver-master.xml").read_bytes()
SLAVE = (SPEC / "sample-settings-accountserver-slave.xml").read_bytes()
STORAGE = (SPEC / "sample-settings-storageserver.xml").read_bytes()

MASTER_GUID = "a40b132e-b8b1-4316-b1f2-c27d301ad2e5"
SLAVE_GUID = "5d0e2c71-3f9a-4c8e-9b1d-7a6f2e4b8c90"
STORAGE_GUID = "9c4f1e2a-6b7d-4e3f-8a2b-1c0d9e8f7a6b"

MASTER_WITH_ISSLAVE_TRUE = (
    b"\xef\xbb\xbf"
    b'<?xml version="1.0" encoding="utf-8"?>\r\n'
    b"<!-- Sample AccountServer Settings.xml for the simulated platform. The real file has many more\r\n"
    b"     elements; only the shape matters here. A Master's file may have no IsSlave element. -->\r\n"
    b"<Settings>\r\n"
    b"  <ServerGuid>a40b132e-b8b1-4316-b1f2-c27d301ad2e5</ServerGuid>\r\n"
    b"  <ServerName>as-a</ServerName>\r\n"
    b"  <IsSlave>True</IsSlave>\r\n"
    b'  <ServicePort default="443">443</ServicePort>\r\n'
    b"  <DatabaseConnection>Server=sql-a;Database=StoragePlatform;Trusted_Connection=True</DatabaseConnection>\r\n"
    b'  <LogLevel choices="Error,Warning,Info,Debug" default="Info">Info</LogLevel>\r\n'
    b"  <Smtp>\r\n"
    b"    <Host>mail.example.test</Host>\r\n"
    b'    <Port default="25">25</Port>\r\n'
    b"  </Smtp>\r\n"
    b"</Settings>\r\n"
)

SLAVE_ISSLAVE_LINE = b'  <IsSlave choices="True,False" default="False">True</IsSlave>\r\n'
B21_ATTRIBUTES = {"choices": "True,False", "default": "False"}


def changed_range(old: bytes, new: bytes) -> tuple[int, bytes, bytes]:
    """The common prefix length and the differing middles of two byte strings (common suffix removed)."""
    prefix = 0
    while prefix < min(len(old), len(new)) and old[prefix] == new[prefix]:
        prefix += 1
    suffix = 0
    while suffix < min(len(old), len(new)) - prefix and old[-1 - suffix] == new[-1 - suffix]:
        suffix += 1
    return prefix, old[prefix : len(old) - suffix], new[prefix : len(new) - suffix]


def doc(body: str, *, declaration: bool = True) -> bytes:
    head = '<?xml version="1.0" encoding="utf-8"?>\r\n' if declaration else ""
    return (head + body).encode("utf-8")


# --- reading the samples -------------------------------------------------------------------------


def test_samples_read_as_their_roles() -> None:
    assert read_is_slave(MASTER) is None
    assert read_is_slave(SLAVE) is True
    assert read_is_slave(STORAGE) is None


def test_samples_server_guids() -> None:
    assert read_server_guid(MASTER) == MASTER_GUID
    assert read_server_guid(SLAVE) == SLAVE_GUID
    assert read_server_guid(STORAGE) == STORAGE_GUID


def test_is_slave_is_read_case_insensitively_and_around_whitespace() -> None:
    assert read_is_slave(doc("<S><ServerGuid>x</ServerGuid><IsSlave> false\r\n</IsSlave></S>")) is False
    assert read_is_slave(doc("<S><IsSlave>TRUE</IsSlave></S>")) is True


def test_server_guid_is_returned_as_written() -> None:
    braced = doc("<S><ServerGuid> {A40B132E-B8B1-4316-B1F2-C27D301AD2E5} </ServerGuid></S>")
    assert read_server_guid(braced) == "{A40B132E-B8B1-4316-B1F2-C27D301AD2E5}"
    assert normalise_guid(read_server_guid(braced)) == MASTER_GUID


# --- editing the samples, byte for byte ------------------------------------------------------------


def test_b2_adds_is_slave_true_to_the_master_sample_exactly() -> None:
    assert set_is_slave(MASTER, True, add_if_absent=True) == MASTER_WITH_ISSLAVE_TRUE


def test_b21_adds_the_element_with_its_attributes() -> None:
    result = set_is_slave(MASTER, True, add_if_absent=True, attributes=B21_ATTRIBUTES)
    assert result == MASTER_WITH_ISSLAVE_TRUE.replace(b"  <IsSlave>True</IsSlave>\r\n", SLAVE_ISSLAVE_LINE)


def test_added_element_is_a_child_of_the_root_after_server_name() -> None:
    result = set_is_slave(STORAGE, True, add_if_absent=True)
    root = etree.fromstring(result)
    assert [child.tag for child in root][:3] == ["ServerGuid", "ServerName", "IsSlave"]
    assert b"  <ServerName>ss-a1</ServerName>\r\n  <IsSlave>True</IsSlave>\r\n  <ServicePort" in result


def test_f2_demotes_the_slave_sample_changing_only_the_value() -> None:
    result = set_is_slave(SLAVE, False, add_if_absent=False)
    value_at = SLAVE.index(b'default="False">True</IsSlave>') + len(b'default="False">')
    assert result[:value_at] == SLAVE[:value_at]
    assert result[value_at : value_at + 5] == b"False"
    assert result[value_at + 5 :] == SLAVE[value_at + 4 :]
    prefix, old_middle, new_middle = changed_range(SLAVE, result)
    assert value_at <= prefix and prefix + len(new_middle) <= value_at + 5
    assert (old_middle, new_middle) == (b"Tru", b"Fals")  # the shared final "e" is not a change
    assert result == SLAVE.replace(SLAVE_ISSLAVE_LINE, SLAVE_ISSLAVE_LINE.replace(b">True<", b">False<"))
    assert read_is_slave(result) is False


def test_round_trips_restore_the_original_bytes() -> None:
    demoted = set_is_slave(SLAVE, False, add_if_absent=False)
    assert set_is_slave(demoted, True, add_if_absent=False) == SLAVE
    promoted = set_is_slave(MASTER, True, add_if_absent=True)
    demoted_master = set_is_slave(promoted, False, add_if_absent=True)
    assert demoted_master == MASTER_WITH_ISSLAVE_TRUE.replace(b">True</IsSlave>", b">False</IsSlave>")
    assert set_is_slave(demoted_master, True, add_if_absent=True) == promoted


def test_unchanged_values_return_identical_bytes() -> None:
    assert set_is_slave(SLAVE, True, add_if_absent=False) == SLAVE
    assert set_is_slave(SLAVE, True, add_if_absent=True, attributes=B21_ATTRIBUTES) == SLAVE
    # Absent means Master, so setting False on a Master's file adds nothing.
    assert set_is_slave(MASTER, False, add_if_absent=True) == MASTER
    once = set_is_slave(MASTER, True, add_if_absent=True)
    assert set_is_slave(once, True, add_if_absent=True) == once
    lower = doc("<S><IsSlave>true</IsSlave></S>")
    assert set_is_slave(lower, True, add_if_absent=False) == lower


def test_bom_and_crlf_are_preserved() -> None:
    for result in (set_is_slave(MASTER, True, add_if_absent=True), set_is_slave(SLAVE, False, add_if_absent=False)):
        assert result.startswith(codecs.BOM_UTF8)
        assert result.count(b"\n") == result.count(b"\r\n")
    added = set_is_slave(MASTER, True, add_if_absent=True)
    assert added.count(b"\r\n") == MASTER.count(b"\r\n") + 1


def test_utf8_without_bom_and_lf_line_endings() -> None:
    plain = MASTER.removeprefix(codecs.BOM_UTF8).replace(b"\r\n", b"\n")
    result = set_is_slave(plain, True, add_if_absent=True)
    expected = MASTER_WITH_ISSLAVE_TRUE.removeprefix(codecs.BOM_UTF8).replace(b"\r\n", b"\n")
    assert result == expected


@pytest.mark.parametrize("codec, bom", [("utf-16-le", codecs.BOM_UTF16_LE), ("utf-16-be", codecs.BOM_UTF16_BE)])
def test_utf16_files_keep_their_encoding(codec: str, bom: bytes) -> None:
    def utf16(content: bytes) -> bytes:
        text = content.removeprefix(codecs.BOM_UTF8).decode("utf-8").replace('encoding="utf-8"', 'encoding="utf-16"')
        return bom + text.encode(codec)

    original = utf16(SLAVE)
    assert read_is_slave(original) is True
    assert read_server_guid(original) == SLAVE_GUID
    demoted = set_is_slave(original, False, add_if_absent=False)
    assert demoted == utf16(SLAVE.replace(b">True</IsSlave>", b">False</IsSlave>"))
    assert set_is_slave(utf16(MASTER), True, add_if_absent=True) == utf16(MASTER_WITH_ISSLAVE_TRUE)


def test_non_ascii_text_before_the_element_keeps_offsets_right() -> None:
    original = doc("<S>\r\n  <!-- Zürich — café ✓ -->\r\n  <Name>Ærøskøbing</Name>\r\n  <IsSlave>False</IsSlave></S>")
    result = set_is_slave(original, True, add_if_absent=False)
    assert result == original.replace(b">False<", b">True<")


def test_windows_1252_declared_file() -> None:
    original = '<?xml version="1.0" encoding="windows-1252"?>\r\n<S><N>Café</N><IsSlave>False</IsSlave></S>'
    content = original.encode("cp1252")
    assert set_is_slave(content, True, add_if_absent=False) == content.replace(b">False<", b">True<")


# --- edge cases of locating and inserting ------------------------------------------------------------


def test_whitespace_around_the_value_is_kept() -> None:
    original = doc("<S>\r\n  <IsSlave>\r\n    True  \r\n  </IsSlave>\r\n</S>")
    result = set_is_slave(original, False, add_if_absent=False)
    assert result == original.replace(b"    True  ", b"    False  ")


def test_value_written_as_a_character_reference_is_replaced_whole() -> None:
    original = doc("<S><IsSlave>&#84;rue</IsSlave></S>")
    assert read_is_slave(original) is True
    assert set_is_slave(original, False, add_if_absent=False) == original.replace(b"&#84;rue", b"False")


def test_is_slave_inside_comments_cdata_and_attributes_is_ignored() -> None:
    original = doc(
        "<Settings>\r\n"
        "  <!-- <IsSlave>True</IsSlave> -->\r\n"
        "  <ServerGuid note='<IsSlave>'>a40b132e-b8b1-4316-b1f2-c27d301ad2e5</ServerGuid>\r\n"
        "  <Note><![CDATA[<IsSlave>True</IsSlave>]]></Note>\r\n"
        "</Settings>\r\n"
    ).replace(b"note='<IsSlave>'", b"note='&lt;IsSlave>'")
    assert read_is_slave(original) is None
    result = set_is_slave(original, True, add_if_absent=True)
    assert result == original.replace(b"</ServerGuid>\r\n", b"</ServerGuid>\r\n  <IsSlave>True</IsSlave>\r\n")


def test_nested_is_slave_counts_as_the_element() -> None:
    original = doc("<S><Role><IsSlave>True</IsSlave></Role></S>")
    assert read_is_slave(original) is True
    assert set_is_slave(original, False, add_if_absent=True) == original.replace(b"True", b"False")


def test_insertion_goes_past_a_trailing_comment_on_the_anchor_line() -> None:
    original = doc("<S>\r\n\t<ServerName>x</ServerName> <!-- the host -->\r\n\t<Port>1</Port>\r\n</S>")
    result = set_is_slave(original, True, add_if_absent=True)
    assert result == original.replace(b"<!-- the host -->", b"<!-- the host -->\r\n\t<IsSlave>True</IsSlave>")


def test_insertion_does_not_split_a_comment_spanning_lines() -> None:
    original = doc("<S>\r\n  <ServerName>x</ServerName><!-- a\r\n  b -->\r\n</S>")
    result = set_is_slave(original, True, add_if_absent=True)
    assert result == original.replace(b"</ServerName>", b"</ServerName>\r\n  <IsSlave>True</IsSlave>")


def test_insertion_without_server_name_goes_after_the_last_child() -> None:
    original = doc("<S>\r\n    <A>1</A>\r\n    <B><C/></B>\r\n</S>\r\n")
    result = set_is_slave(original, True, add_if_absent=True)
    assert result == original.replace(b"<B><C/></B>", b"<B><C/></B>\r\n    <IsSlave>True</IsSlave>")


def test_insertion_on_a_single_line_document() -> None:
    original = doc("<S><ServerGuid>g</ServerGuid><A>1</A></S>", declaration=False)
    result = set_is_slave(original, True, add_if_absent=True)
    assert result == b"<S><ServerGuid>g</ServerGuid><IsSlave>True</IsSlave><A>1</A></S>"


def test_insertion_into_an_empty_root() -> None:
    assert set_is_slave(b"<S></S>", True, add_if_absent=True) == b"<S><IsSlave>True</IsSlave></S>"
    assert set_is_slave(b"<S>\r\n</S>", True, add_if_absent=True) == b"<S>\r\n  <IsSlave>True</IsSlave>\r\n</S>"


def test_namespaced_document() -> None:
    original = doc('<Settings xmlns="urn:example">\n  <ServerName>x</ServerName>\n</Settings>')
    result = set_is_slave(original, True, add_if_absent=True)
    assert result == original.replace(b"</ServerName>\n", b"</ServerName>\n  <IsSlave>True</IsSlave>\n")
    assert read_is_slave(result) is True


def test_added_attribute_values_are_escaped() -> None:
    result = set_is_slave(b"<S></S>", True, add_if_absent=True, attributes={"note": 'a "b" & <c>'})
    assert result == b'<S><IsSlave note="a &quot;b&quot; &amp; &lt;c>">True</IsSlave></S>'
    assert etree.fromstring(result)[0].get("note") == 'a "b" & <c>'
    with pytest.raises(ValueError, match="not an XML attribute name"):
        set_is_slave(MASTER, True, add_if_absent=True, attributes={"bad name": "x"})


# --- errors: a clear message, nothing returned ------------------------------------------------------------


def test_settings_xml_error_is_an_execution_error() -> None:
    assert issubclass(SettingsXmlError, ExecutionError)


def test_malformed_xml() -> None:
    broken = doc("<Settings>\r\n  <ServerGuid>x</ServerGuid>\r\n  <IsSlave>True</Isslave>\r\n</Settings>")
    for call in (read_is_slave, read_server_guid, lambda c: set_is_slave(c, False, add_if_absent=False)):
        with pytest.raises(SettingsXmlError, match=r"^Settings\.xml is not well-formed XML: line 4: Opening and"):
            call(broken)
    with pytest.raises(SettingsXmlError, match=r"^Settings\.xml is not well-formed XML: line 1: Document is empty"):
        read_is_slave(b"")


def test_malformed_xml_message_masks_guids() -> None:
    broken = doc(f"<Settings>\r\n  <ServerGuid>{MASTER_GUID}</ServerGuid>\r\n  <{MASTER_GUID}>\r\n</Settings>")
    with pytest.raises(SettingsXmlError) as caught:
        read_server_guid(broken)
    assert str(caught.value).startswith("Settings.xml is not well-formed XML: line ")
    assert "********-****-****-****-c27d301ad2e5" in str(caught.value)
    assert MASTER_GUID not in str(caught.value)


def test_missing_elements() -> None:
    without_guid = doc("<Settings><ServerName>x</ServerName></Settings>")
    with pytest.raises(SettingsXmlError, match=r"^Settings\.xml has no ServerGuid element$"):
        read_server_guid(without_guid)
    with pytest.raises(SettingsXmlError, match=r"^Settings\.xml has no IsSlave element$"):
        set_is_slave(MASTER, True, add_if_absent=False)
    with pytest.raises(SettingsXmlError, match=r"^Settings\.xml has no IsSlave element$"):
        set_is_slave(MASTER, False, add_if_absent=False)


def test_duplicate_elements() -> None:
    twice = SLAVE.replace(b"  <Smtp>\r\n", b"  <Smtp>\r\n    <IsSlave>False</IsSlave>\r\n")
    for call in (read_is_slave, lambda c: set_is_slave(c, False, add_if_absent=True)):
        with pytest.raises(SettingsXmlError, match=r"^Settings\.xml has 2 IsSlave elements; expected exactly one$"):
            call(twice)
    guids = MASTER.replace(b"</Settings>", b"<ServerGuid>x</ServerGuid><ServerGuid>y</ServerGuid></Settings>")
    with pytest.raises(SettingsXmlError, match=r"^Settings\.xml has 3 ServerGuid elements; expected exactly one$"):
        read_server_guid(guids)


@pytest.mark.parametrize(
    "element, message",
    [
        ("<IsSlave>maybe</IsSlave>", "IsSlave has value 'maybe'; expected True or False"),
        ("<IsSlave>1</IsSlave>", "IsSlave has value '1'; expected True or False"),
        ("<IsSlave></IsSlave>", "IsSlave has value ''; expected True or False"),
        ("<IsSlave/>", "IsSlave has value ''; expected True or False"),
        ("<IsSlave><Value>True</Value></IsSlave>", "IsSlave has child elements"),
        ("<IsSlave><!-- x -->True</IsSlave>", "IsSlave contains a comment or processing instruction"),
    ],
)
def test_bad_is_slave_values(element: str, message: str) -> None:
    content = doc(f"<Settings><ServerGuid>{MASTER_GUID}</ServerGuid>{element}</Settings>")
    for call in (read_is_slave, lambda c: set_is_slave(c, True, add_if_absent=True)):
        with pytest.raises(SettingsXmlError, match="^" + re.escape(message)):
            call(content)


def test_bad_server_guids() -> None:
    with pytest.raises(SettingsXmlError, match=r"^Settings\.xml: ServerGuid is empty$"):
        read_server_guid(doc("<S><ServerGuid> </ServerGuid></S>"))
    with pytest.raises(SettingsXmlError, match=r"^Settings\.xml: ServerGuid is not a GUID \(9 characters\)$"):
        read_server_guid(doc("<S><ServerGuid>not-guid!</ServerGuid></S>"))
    with pytest.raises(SettingsXmlError, match=r"^ServerGuid has child elements$"):
        read_server_guid(doc("<S><ServerGuid><G/></ServerGuid></S>"))


def test_doctype_is_refused() -> None:
    content = doc('<!DOCTYPE S [<!ENTITY e "True">]>\r\n<S><IsSlave>&e;</IsSlave></S>')
    with pytest.raises(SettingsXmlError, match="DOCTYPE"):
        read_is_slave(content)


def test_unsupported_encoding_and_invalid_bytes() -> None:
    with pytest.raises(SettingsXmlError, match="not well-formed|unsupported encoding"):
        read_is_slave(b'<?xml version="1.0" encoding="x-nonsense"?><S/>')
    with pytest.raises(SettingsXmlError):
        read_is_slave(b'<?xml version="1.0" encoding="utf-8"?><S>\xff</S>')


def test_self_closing_root_cannot_take_a_child() -> None:
    with pytest.raises(SettingsXmlError, match=r"root element <Settings/> is empty"):
        set_is_slave(b"<Settings/>", True, add_if_absent=True)


def test_content_must_be_bytes() -> None:
    with pytest.raises(TypeError):
        read_is_slave(MASTER.decode("utf-8-sig"))  # type: ignore[arg-type]


# --- the diff shown before approval ------------------------------------------------------------------


def _sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()[:16]


def test_preview_of_b2_shows_only_the_added_element_and_the_masked_guid() -> None:
    preview = settings_change(MASTER, MASTER_WITH_ISSLAVE_TRUE, filename="as-a:Settings.xml")
    assert preview.splitlines() == [
        f"as-a:Settings.xml (ServerGuid ********-****-****-****-c27d301ad2e5; file SHA-256 {_sha(MASTER)}…):",
        "- (no IsSlave element)",
        "+ <IsSlave>True</IsSlave>",
    ]
    assert MASTER_GUID not in preview and MASTER_GUID.upper() not in preview


def test_preview_of_f2_shows_the_value_change() -> None:
    demoted = set_is_slave(SLAVE, False, add_if_absent=False)
    preview = settings_change(SLAVE, demoted, filename=r"C:\ProgramData\Attix5 Pro\AS_Service\Settings.xml")
    assert preview.splitlines()[1:] == [
        '- <IsSlave choices="True,False" default="False">True</IsSlave>',
        '+ <IsSlave choices="True,False" default="False">False</IsSlave>',
    ]
    assert SLAVE_GUID not in preview
    assert "********-****-****-****-7a6f2e4b8c90" in preview


def test_no_other_line_of_the_file_leaves_the_host() -> None:
    """Finding 9: secrets in elements, CDATA and attributes with innocent names stay out of the preview."""
    other = str(uuid.UUID(int=0xABCDEF0123456789ABCDEF0123456789))
    old = doc(
        f"<S>\r\n  <Mirror id='{other}'/>\r\n"
        '  <add key="SmtpAuth" value="smtp-hunter2"/>\r\n'
        "  <Notes><![CDATA[db=Server=sql;User ID=sa;Pwd=cdata-s3cret]]></Notes>\r\n"
        '  <Reporting endpoint="https://u:attr-pass@report.example">on</Reporting>\r\n'
        "  <ApiKeyish>plain-value-9f8e</ApiKeyish>\r\n"
        f"  <ServerGuid>{{{MASTER_GUID.upper()}}}</ServerGuid>\r\n  <IsSlave>False</IsSlave>\r\n</S>"
    )
    new = set_is_slave(old, True, add_if_absent=False)
    preview = settings_change(old, new, filename="Settings.xml")
    for secret in (MASTER_GUID.upper(), other, "smtp-hunter2", "SmtpAuth", "cdata-s3cret", "attr-pass", "9f8e"):
        assert secret not in preview
    assert preview.splitlines() == [
        f"Settings.xml (ServerGuid ********-****-****-****-c27d301ad2e5; file SHA-256 {_sha(old)}…):",
        "- <IsSlave>False</IsSlave>",
        "+ <IsSlave>True</IsSlave>",
    ]


def test_preview_of_identical_files_is_empty() -> None:
    assert settings_change(SLAVE, set_is_slave(SLAVE, True, add_if_absent=False), filename="Settings.xml") == ""


# --- GUID helpers ---------------------------------------------------------------------------------


def test_mask_guid() -> None:
    assert mask_guid(MASTER_GUID) == "********-****-****-****-c27d301ad2e5"
    # one form wherever the bot shows a GUID (actions.guid): normalised, whatever the file wrote
    assert mask_guid("{A40B132E-B8B1-4316-B1F2-C27D301AD2E5}") == "********-****-****-****-c27d301ad2e5"
    assert mask_guid(uuid.UUID(MASTER_GUID)) == "********-****-****-****-c27d301ad2e5"
    assert mask_guid("a40b132e") == "********"
    assert mask_guid("not a guid") == "*** * ****"


def test_normalise_guid() -> None:
    assert normalise_guid(" {A40B132E-B8B1-4316-B1F2-C27D301AD2E5} ") == MASTER_GUID
    assert normalise_guid(uuid.UUID(MASTER_GUID.upper())) == MASTER_GUID
    assert normalise_guid(MASTER_GUID.upper()) == normalise_guid(MASTER_GUID)
    for bad in ("", "{}", "a40b132e", MASTER_GUID + "0", "{" + MASTER_GUID, "g40b132e-b8b1-4316-b1f2-c27d301ad2e5"):
        with pytest.raises(ValueError, match="not a GUID"):
            normalise_guid(bad)


def test_otp_from_guid() -> None:
    assert otp_from_guid(MASTER_GUID) == "a40b132e"
    assert otp_from_guid("{A40B132E-B8B1-4316-B1F2-C27D301AD2E5}") == "a40b132e"
    assert otp_from_guid(read_server_guid(STORAGE)) == "9c4f1e2a"
    with pytest.raises(ValueError):
        otp_from_guid("a40b132e")


# --- property-style: random layouts, only the element text changes ----------------------------------------


@dataclass(frozen=True)
class Variant:
    """A generated Settings.xml split around the IsSlave value, with its encoding."""

    before: str
    value: str
    after: str
    bom: bytes
    codec: str

    def encode(self, value: str | None = None) -> bytes:
        return self.bom + (self.before + (self.value if value is None else value) + self.after).encode(self.codec)


COMMENTS = [
    "<!-- plain -->",
    "<!-- <IsSlave>True</IsSlave> -->",
    "<!-- a > b & c < d -->",
    "<!-- multi\r\n     line -->",
    "<!-- Zürich — ✓ -->",
    "<?hint IsSlave?>",
]
ENCODINGS = [
    (codecs.BOM_UTF8, "utf-8", "utf-8"),
    (b"", "utf-8", "utf-8"),
    (b"", "utf-8", None),
    (codecs.BOM_UTF16_LE, "utf-16-le", "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "utf-16"),
]


def random_attributes(rng: random.Random, nl: str) -> str:
    pool = ['choices="True,False"', "default='False'", 'note="a>b"', "x = 'y'", 'empty=""', "q='\"'"]
    chosen = rng.sample(pool, rng.randint(0, 4))
    separators = [rng.choice([" ", "  ", nl + "    ", "\t"]) for _ in chosen]
    return "".join(sep + attr for sep, attr in zip(separators, chosen, strict=True)) + rng.choice(["", " ", nl])


def random_siblings(rng: random.Random, nl: str, indent: str) -> list[str]:
    siblings = [
        f"<ServerGuid>{uuid.UUID(int=rng.getrandbits(128))}</ServerGuid>",
        "<ServerName>as-x</ServerName>",
        '<ServicePort default="443">443</ServicePort>',
        "<Empty/>",
        "<Empty2 />",
        f"<Smtp>{nl}{indent * 2}<Host>h</Host>{nl}{indent}</Smtp>",
        "<Note><![CDATA[<IsSlave>False</IsSlave> ]]></Note>",
        "<Text>a &amp; b &gt; c</Text>",
        "<Ns:Value xmlns:Ns='urn:x'>1</Ns:Value>",
    ]
    siblings += rng.sample(COMMENTS, rng.randint(0, 3))
    rng.shuffle(siblings)
    return siblings[: rng.randint(1, len(siblings))]


def random_document(rng: random.Random, *, is_slave: str | None) -> Variant:
    nl = rng.choice(["\r\n", "\n"])
    indent = rng.choice(["  ", "    ", "\t", ""])
    bom, codec, declared = rng.choice(ENCODINGS)
    quote = rng.choice(['"', "'"])
    head = ""
    if declared is not None:
        head = f"<?xml version={quote}1.0{quote} encoding={quote}{declared}{quote}"
        head += rng.choice(["", f" standalone={quote}yes{quote}"]) + "?>" + nl
    head += "".join(comment + nl for comment in rng.sample(COMMENTS[:5], rng.randint(0, 2)))
    root = rng.choice(["Settings", "AccountServerSettings"])
    children = [indent + child for child in random_siblings(rng, nl, indent)]
    if is_slave is None:
        body = nl.join(children)
        text = f"{head}<{root}{random_attributes(rng, nl)}>{nl}{body}{nl}</{root}>" + rng.choice(["", nl])
        return Variant(text, "", "", bom, codec)
    position = rng.randint(0, len(children))
    lead = rng.choice(["", " ", nl + indent * 2])
    trail = rng.choice(["", " ", nl + indent])
    tag = "IsSlave" + random_attributes(rng, nl)
    before_children = nl.join(children[:position] + [f"{indent}<{tag}>{lead}"])
    after_children = nl.join([f"{trail}</IsSlave>"] + children[position:])
    before = f"{head}<{root}>{nl}{before_children}"
    after = f"{after_children}{nl}</{root}>{nl}" + rng.choice(["", "<!-- after -->" + nl])
    return Variant(before, is_slave, after, bom, codec)


@pytest.mark.parametrize("seed", range(300))
def test_random_layouts_only_the_value_changes(seed: int) -> None:
    rng = random.Random(seed)
    variant = random_document(rng, is_slave=rng.choice(["True", "False", "true", "FALSE"]))
    original = variant.encode()
    current = variant.value.lower() == "true"
    assert read_is_slave(original) is current

    flipped = set_is_slave(original, not current, add_if_absent=rng.choice([True, False]))
    assert flipped == variant.encode("True" if not current else "False")
    assert read_is_slave(flipped) is (not current)
    assert set_is_slave(flipped, not current, add_if_absent=False) == flipped
    assert set_is_slave(original, current, add_if_absent=False) == original
    restored = set_is_slave(flipped, current, add_if_absent=False)
    assert restored == variant.encode("True" if current else "False")

    guid = read_server_guid(original) if "<ServerGuid>" in variant.before + variant.after else None
    preview = settings_change(original, flipped, filename="Settings.xml")
    assert len(preview.splitlines()) == 3  # the file's name, the element before and after: nothing else
    if guid is not None:
        assert guid not in preview
        assert read_server_guid(flipped) == guid


@pytest.mark.parametrize("seed", range(200))
def test_random_layouts_adding_inserts_one_contiguous_element(seed: int) -> None:
    rng = random.Random(10_000 + seed)
    variant = random_document(rng, is_slave=None)
    original = variant.encode()
    assert read_is_slave(original) is None
    attributes = rng.choice([None, B21_ATTRIBUTES])

    result = set_is_slave(original, True, add_if_absent=True, attributes=attributes)
    prefix, removed, inserted = changed_range(original, result)
    assert removed == b""
    # The splice point may slide within a run of equal bytes; what matters is one contiguous insertion.
    assert result[:prefix] + result[prefix + len(inserted) :] == original
    element = "<IsSlave>True</IsSlave>"
    if attributes:
        element = '<IsSlave choices="True,False" default="False">True</IsSlave>'
    old_text = original.removeprefix(variant.bom).decode(variant.codec)
    new_text = result.removeprefix(variant.bom).decode(variant.codec)
    removals = {new_text[: m.start()] + new_text[m.end() :] for m in re.finditer(re.escape(element), new_text)}
    removals |= {
        new_text[: m.start()] + new_text[m.end() :] for m in re.finditer(r"\r?\n[ \t]*" + re.escape(element), new_text)
    }
    assert old_text in removals

    assert read_is_slave(result) is True
    root = etree.fromstring(result)
    assert root.find("IsSlave") is not None
    names = [child.tag for child in root if isinstance(child.tag, str)]
    anchors = [i for i, name in enumerate(names) if name in ("ServerGuid", "ServerName")]
    assert names.index("IsSlave") == (max(anchors) + 1 if anchors else len(names) - 1)
    assert result.startswith(variant.bom)
    assert set_is_slave(result, True, add_if_absent=True) == result
