"""engines/options.py: one declaration per option validates a submission; strings pass the metacharacter rule."""
import pytest

from engines.options import Option, OptionError, check_safe_string, validate_options

OPTIONS = (
    Option("ports", "string", "ports", pattern=r"[0-9,-]+"),
    Option("depth", "integer", "crawl depth", minimum=1, maximum=5, default=2),
    Option("mode", "enum", "mode", choices=("fast", "full")),
    Option("name", "string", "a label", normalize=lambda value: value.lower()),
    Option("form", "string", "a form body", pattern=r"[a-z]+=[a-z]+(&[a-z]+=[a-z]+)*", generic_check=False),
)


@pytest.mark.parametrize("raw, clean", [
    (None, {}),
    ({}, {}),
    ({"depth": 3, "mode": "full"}, {"depth": 3, "mode": "full"}),
    ({"depth": None}, {}),  # null means not given
    ({"name": "Office-LAN"}, {"name": "office-lan"}),  # normalize runs after the schema check
    ({"form": "user=a&pass=b"}, {"form": "user=a&pass=b"}),  # its pattern alone decides
])
def test_accepted_options(raw, clean):
    assert validate_options(OPTIONS, raw, "test") == clean


@pytest.mark.parametrize("raw, field, message", [
    ([], "options", "must be an object"),
    ({"bogus": 1}, "options.bogus", "unknown option"),
    ({"depth": 9}, "options.depth", "must be between 1 and 5"),
    ({"mode": "slow"}, "options.mode", "must be one of fast, full"),
    ({"name": "-oX"}, "options.name", "must not start with '-'"),
    ({"name": "a;id"}, "options.name", "contains characters that are not allowed"),
    ({"ports": "80 443"}, "options.ports", "contains characters that are not allowed"),
])
def test_refused_options_name_the_field(raw, field, message):
    with pytest.raises(OptionError) as caught:
        validate_options(OPTIONS, raw, "test")
    assert (caught.value.field, caught.value.message) == (field, message)


@pytest.mark.parametrize("value, message", [
    ("", "must not be empty"),
    ("x" * 257, "must be at most 256 characters"),
    ("--script", "must not start with '-'"),
    ("a$(id)", "contains characters that are not allowed"),
    ("a\nb", "contains characters that are not allowed"),
    ("../etc", "must not be a path"),
    ("/etc/passwd", "must not be a path"),
])
def test_unsafe_strings_are_refused(value, message):
    with pytest.raises(OptionError, match="where: " + message.replace("(", r"\(").replace(")", r"\)")):
        check_safe_string("where", value)


def test_a_safe_string_passes():
    check_safe_string("where", "example.test,8080")


def test_skipping_the_generic_check_needs_a_pattern():
    with pytest.raises(TypeError, match="needs a pattern"):
        Option("form", "string", "a form body", generic_check=False)
