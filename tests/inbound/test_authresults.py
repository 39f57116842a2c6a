"""Reading ``Authentication-Results`` (RFC 8601) from the hosts the operator trusts."""

from __future__ import annotations

import time

import pytest

from app.inbound.authresults import MAX_HEADER_CHARS, Result, parse, trusted, verdicts

AR = "authentication-results"
TRUSTED = ["mx.example.com"]


def ar(value: str) -> tuple[str, str]:
    return (AR, value)


class TestParse:
    def test_authserv_id_version_results_and_properties(self) -> None:
        parsed = parse(
            "MX.Example.COM. 1; spf=pass (sender SPF authorized) smtp.mailfrom=a@example.org;"
            " dkim=pass (2048-bit key; secure) header.d=example.org header.i=@example.org"
            ' header.b="abc+/="; dmarc=pass (p=none dis=none) header.from=example.org'
        )
        assert parsed is not None
        assert (parsed.authserv_id, parsed.version) == ("mx.example.com", 1)
        assert parsed.results == (
            Result("spf", "pass", {"smtp.mailfrom": "a@example.org"}),
            Result(
                "dkim",
                "pass",
                {"header.d": "example.org", "header.i": "@example.org", "header.b": "abc+/="},
            ),
            Result("dmarc", "pass", {"header.from": "example.org"}),
        )

    def test_no_result_and_a_quoted_authserv_id(self) -> None:
        parsed = parse('"mx.example.com" ; none')
        assert parsed is not None
        assert (parsed.authserv_id, parsed.results) == ("mx.example.com", ())

    def test_white_space_nested_comments_method_versions_and_reasons(self) -> None:
        parsed = parse(
            "mx.example.com (a (nested; comment) \\) here);\r\n\tdkim/1 = Pass"
            ' reason="good (really); fine" header . d = Example.org'
        )
        assert parsed is not None
        assert parsed.results == (Result("dkim", "pass", {"header.d": "Example.org"}),)

    @pytest.mark.parametrize(
        "value", ["", "   ", ";dkim=pass", "(only a comment)", '"', "mx.example.com; =pass"]
    )
    def test_unreadable_values_give_nothing_never_an_error(self, value: str) -> None:
        parsed = parse(value)
        assert parsed is None or parsed.results == ()

    def test_the_result_cut_by_the_bound_is_not_read(self) -> None:
        # A padded header whose last signature domain the bound would cut to "victim.com".
        padding = "; dkim=neutral header.d=pad.example" * 400
        value = "mx.example.com" + padding
        value = value[: MAX_HEADER_CHARS - len("; dkim=pass header.d=victim.com")]
        value += "; dkim=pass header.d=victim.com.attacker.example"
        parsed = parse(value)
        assert parsed is not None
        assert all(r.properties.get("header.d") != "victim.com" for r in parsed.results)

    @pytest.mark.parametrize(
        "value",
        [
            "a" * 200_000,
            "1" * 200_000,
            " " * 200_000,
            "(" * 200_000,
            '"' * 200_000,
            "\\" * 200_000,
            "= " * 100_000,
            "mx; " + "dkim=pass header.d=x.org " * 10_000,
            "mx" + "; a=b" * 50_000,
            "x" + " =" * 100_000,
        ],
    )
    def test_hostile_values_are_read_in_linear_time(self, value: str) -> None:
        started = time.perf_counter()
        parse(value)
        assert time.perf_counter() - started < 0.5


class TestWhichHeadersCount:
    def test_only_trusted_authserv_ids_are_read(self) -> None:
        headers = [
            ar("mx.example.com; dkim=pass header.d=example.org"),
            ar("mx.other.example; dkim=pass header.d=victim.example"),
        ]
        assert [h.authserv_id for h in trusted(headers, TRUSTED)] == ["mx.example.com"]

    def test_nothing_is_trusted_without_trusted_ids(self) -> None:
        assert trusted([ar("mx.example.com; dkim=pass header.d=x.org")], []) == []

    def test_reading_stops_at_the_first_header_of_another_authserv_id(self) -> None:
        headers = [
            ("received", "from mail.example.org by mx.example.com"),
            ar("mx.example.com; spf=pass smtp.mailfrom=a@example.org"),
            ar("mx.example.com; dkim=pass header.d=example.org"),
            ar("mail.example.org; dkim=pass header.d=example.org"),
            ar("mx.example.com; dmarc=pass header.from=victim.example"),  # written outside
        ]
        found = trusted(headers, TRUSTED)
        assert [r.method for h in found for r in h.results] == ["spf", "dkim"]

    def test_other_verdict_headers_are_never_read(self) -> None:
        headers = [
            ("received-spf", "Pass (mailfrom) identity=mailfrom"),
            ("x-mailgun-spf", "Pass"),
            ("x-spam-spf", "pass"),
            ("arc-authentication-results", "i=1; mx.example.com; dkim=pass header.d=x.org"),
        ]
        assert verdicts(headers, TRUSTED, "a@example.org").spf is None

    def test_authserv_ids_compare_without_case_or_a_trailing_dot(self) -> None:
        headers = [ar("MX.EXAMPLE.COM.; dkim=pass header.d=example.org")]
        assert len(trusted(headers, ["mx.example.com."])) == 1


class TestVerdicts:
    def test_per_method_the_topmost_result_wins(self) -> None:
        headers = [
            ar("mx.example.com; dkim=fail header.d=example.org; dmarc=fail header.from=x.org"),
            ar("mx.example.com; dkim=pass header.d=example.org; dkim=pass header.d=other.org"),
            ar("mx.example.com; dmarc=pass header.from=x.org"),
        ]
        found = verdicts(headers, TRUSTED, None)
        assert found.dkim == "{@example.org : fail}, {@other.org : pass}"
        assert found.dmarc == "{@x.org : fail}"

    def test_dkim_domain_from_header_i_and_dmarc_from_header_from(self) -> None:
        headers = [
            ar(
                "mx.example.com; dkim=pass header.i=news@Example.ORG;"
                " dmarc=pass header.from=Example.org"
            )
        ]
        found = verdicts(headers, TRUSTED, None)
        assert (found.dkim, found.dmarc) == ("{@example.org : pass}", "{@example.org : pass}")

    @pytest.mark.parametrize(
        ("result", "envelope_from", "spf"),
        [
            ("spf=pass smtp.mailfrom=bounce@example.org", "bounce@example.org", "pass"),
            ("spf=pass smtp.mailfrom=example.org", "bounce@Example.org", "pass"),
            ("spf=softfail smtp.mailfrom=bounce@example.org", "bounce@example.org", "softfail"),
            ("spf=pass smtp.mailfrom=mallory@attacker.example", "ceo@victim.example", None),
            ("spf=pass smtp.helo=mail.example.org", "bounce@example.org", None),
            ("spf=pass smtp.mailfrom=bounce@example.org", None, None),
        ],
    )
    def test_spf_counts_only_for_the_envelope_sender(
        self, result: str, envelope_from: str | None, spf: str | None
    ) -> None:
        headers = [ar(f"mx.example.com; {result}")]
        assert verdicts(headers, TRUSTED, envelope_from).spf == spf
