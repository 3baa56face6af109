"""Vectorised indicator matching in DuckDB, for detectors that read stored tables.

Theory of operation. Each ``*_matches_sql`` function returns the text of one SELECT that the
caller embeds as a subquery; it yields one row per (input value, matching indicator id), with
the input value exactly as given so the caller can join the result back to its own rows. Every
step is a hash join or a vectorised scalar expression; nothing is evaluated row by row in
Python. ``prepare(con)`` defines the ``hg_*`` macros the text uses (temporary, per connection:
call it on the connection or cursor that runs the query).

Addresses (``ip_matches_sql``)
    The input addresses are made DISTINCT first (flows repeat their endpoints heavily). A
    dotted quad counts only in the canonical form ``inet_pton`` accepts (four decimal octets
    without leading zeros); its integer is computed from the split text. IPv6 text (any form
    ``inet_pton`` accepts, any case) is parsed to a ``UHUGEINT`` by string functions: a dotted
    tail becomes two hex groups, ``::`` is expanded to the missing zero groups, the eight groups
    are read as hex and folded. IPv4-mapped addresses (``::ffff:a.b.c.d``, RFC 4291 section
    2.5.5.2) and mapped indicators (``::ffff:102:304``, ``::ffff:102:300/120``) are IPv4.
    Anything else yields NULL and so matches nothing; no input raises an error.

    Single IPv4 indicators (the bulk of any feed) are matched by a hash join of the canonical
    text with the indicator's value, so they are never parsed. Networks (and single IPv6
    addresses) get a key ``(prefix, address >> host bits)``; each query address is crossed with
    the set of prefix lengths present (a DISTINCT over the indicator networks inside the same
    plan) and its keys are hash-joined with the indicator keys: one equi-join finds every
    containing network of every length, overlapping networks of two feeds included.

    An address that does not parse carries NULL keys, which join nothing, rather than being
    filtered out: when every consumer of a materialised CTE filters, DuckDB pushes the
    filters down through it and through the DISTINCT, and would then parse every input row
    (ten million for five million flows) instead of every distinct address. ``hg_a4`` reads
    all of ``hg_p`` unfiltered, which keeps the parse above the DISTINCT.
Domains (``domain_matches_sql``)
    Each distinct name is lower-cased and loses trailing dots; the name itself and every
    suffix after a dot (``a.b.c`` -> ``b.c``, ``c``) are joined with the domain indicators on
    the value: the name itself with ``exact`` and ``suffix`` indicators, the proper suffixes
    with ``suffix`` and ``subdomains`` ones (two joins, each building on the smaller set).
Fingerprints (``hash_matches_sql``)
    A hash join of the trimmed, lower-cased value with indicators of the given kinds.

Expiry is not applied here: the caller joins the ids back to ``indicator`` and compares
``expires`` with the time of its own event.
"""

from __future__ import annotations

import duckdb

# One octet of a canonical dotted quad: 0-255 without leading zeros (what inet_pton accepts).
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_QUAD = rf"{_OCTET}(\.{_OCTET}){{3}}"

# The macros, in dependency order (inside a body, parameters and lambda variables shadow any
# column of the same name in the calling query).
MACROS: tuple[tuple[str, str], ...] = (
    # A canonical dotted quad as a BIGINT, else NULL.
    ("hg_ip4(s)", f"CASE WHEN regexp_full_match(s, '{_QUAD}') THEN list_reduce("
                  "list_transform(string_split(s, '.'), lambda x: x::BIGINT), "
                  "lambda a, b: a * 256 + b) END"),
    # The dotted quad of an integer (for IPv4-mapped addresses given in IPv6 form).
    ("hg_ip4_text(k)", "printf('%d.%d.%d.%d', k >> 24, (k >> 16) & 255, (k >> 8) & 255, "
                       "k & 255)"),
    # IPv6 text in lower case with a dotted IPv4 tail rewritten as two hex groups; NULL when
    # the tail is not a canonical dotted quad or the text has characters IPv6 never has.
    ("hg_ip6_hex(s)", "CASE WHEN NOT regexp_full_match(s, '[0-9A-Fa-f:.]{2,45}') THEN NULL "
                      "WHEN NOT contains(s, '.') THEN lower(s) "
                      f"WHEN regexp_full_match(s, '.*:{_QUAD}') THEN "
                      "regexp_extract(lower(s), '^(.*:)', 1) || printf('%x:%x', "
                      "hg_ip4(regexp_extract(s, '[^:]*$')) >> 16, "
                      "hg_ip4(regexp_extract(s, '[^:]*$')) & 65535) END"),
    # One side of a '::' as a list of groups (empty text: no groups).
    ("hg_ip6_side(s)", "CASE WHEN s = '' THEN []::VARCHAR[] ELSE string_split(s, ':') END"),
    # Left and right sides around '::' joined by the zero groups they leave out (at least one).
    ("hg_ip6_fill(l, r)", "CASE WHEN len(l) + len(r) <= 7 THEN l || list_resize([]::VARCHAR[], "
                          "8 - len(l) - len(r), '0') || r END"),
    # The eight groups of a hex text (after hg_ip6_hex), or NULL. The one-element lists bind
    # the '::' split and the two sides once (a macro argument is expanded at each use).
    ("hg_ip6_groups(h)", "list_transform([string_split(h, '::')], lambda parts: "
                         "CASE len(parts) WHEN 1 THEN string_split(h, ':') "
                         "WHEN 2 THEN list_transform([[hg_ip6_side(parts[1]), "
                         "hg_ip6_side(parts[2])]], lambda lr: hg_ip6_fill(lr[1], lr[2]))[1] "
                         "END)[1]"),
    # Eight groups of 1-4 hex digits folded into a 128-bit integer, else NULL.
    ("hg_ip6_int(g)", "CASE WHEN len(g) = 8 AND list_bool_and(list_transform(g, lambda x: "
                      "regexp_full_match(x, '[0-9a-f]{1,4}'))) THEN list_reduce("
                      "list_transform(g, lambda x: TRY_CAST('0x' || x AS UHUGEINT)), "
                      "lambda a, b: (a << 16) | b) END"),
    # Text to a 128-bit integer (each stage bound once through a one-element list).
    ("hg_ip6(s)", "list_transform([list_transform([hg_ip6_hex(s)], "
                  "lambda h: hg_ip6_groups(h))[1]], lambda g: hg_ip6_int(g))[1]"),
    # The proper suffixes of a name after each dot, longest first: a.b.c -> [b.c, c].
    ("hg_suffixes(n)", "list_transform([string_split(n, '.')], lambda p: list_transform("
                       "range(2, len(p) + 1), lambda j: array_to_string(p[j:], '.')))[1]"),
)

FINGERPRINT_KINDS = ("ja3", "ja3s", "ja4")
# ::ffff:0:0/96 as (address >> 32): the IPv4-mapped block (RFC 4291 section 2.5.5.2).
_MAPPED = 0xFFFF


def prepare(con: duckdb.DuckDBPyConnection) -> None:
    """Define the ``hg_*`` macros on this connection (temporary; idempotent; works on a
    read-only store)."""
    for head, body in MACROS:
        con.execute(f"CREATE OR REPLACE TEMP MACRO {head} AS {body}")


def ip_matches_sql(addresses: str, indicators: str = "indicator") -> str:
    """A SELECT of ``(ip, id)``: every ``ip`` indicator in ``indicators`` equal to or
    containing an address of the ``ip`` column of ``addresses`` (a table or view name, or a
    parenthesised subquery). ``ip`` is returned as given."""
    return f"""WITH
hg_q AS (SELECT DISTINCT ip FROM {addresses} AS hg_src WHERE ip IS NOT NULL),
hg_p AS MATERIALIZED (
  SELECT ip, k4, CASE WHEN u >> 32 <> {_MAPPED} THEN u END AS u6,
         CASE WHEN u >> 32 = {_MAPPED} THEN (u & 4294967295)::BIGINT END AS km
  FROM (SELECT ip, CASE WHEN contains(ip, ':') THEN hg_ip6(ip) END AS u,
               CASE WHEN NOT contains(ip, ':') THEN hg_ip4(ip) END AS k4 FROM hg_q)),
hg_a4 AS MATERIALIZED (
  SELECT ip, CASE WHEN k4 IS NOT NULL THEN ip ELSE hg_ip4_text(km) END AS t,
         coalesce(k4, km) AS k FROM hg_p),
hg_a6 AS (SELECT ip, u6 AS u FROM hg_p WHERE u6 IS NOT NULL),
hg_i AS MATERIALIZED (
  SELECT id, split_part(value, '/', 1) AS a,
         CASE WHEN contains(value, '/') THEN TRY_CAST(split_part(value, '/', 2) AS INTEGER)
         END AS p
  FROM {indicators} AS hg_ind
  WHERE kind = 'ip' AND (contains(value, '/') OR contains(value, ':'))),
hg_i6 AS MATERIALIZED (
  SELECT id, coalesce(p, 128) AS p, hg_ip6(a) AS u FROM hg_i WHERE contains(a, ':')),
hg_n4 AS MATERIALIZED (
  SELECT id, p, k >> (32 - p) AS key FROM (
    SELECT id, p, hg_ip4(a) AS k FROM hg_i WHERE NOT contains(a, ':')
    UNION ALL
    SELECT id, p - 96, (u & 4294967295)::BIGINT FROM hg_i6
    WHERE u >> 32 = {_MAPPED} AND p >= 96)
  WHERE k IS NOT NULL AND p BETWEEN 0 AND 32),
hg_n6 AS MATERIALIZED (
  SELECT id, p, u >> (128 - p)::UHUGEINT AS key FROM hg_i6
  WHERE u IS NOT NULL AND p BETWEEN 0 AND 128 AND NOT (u >> 32 = {_MAPPED} AND p >= 96)),
hg_l4 AS (SELECT DISTINCT p FROM hg_n4),
hg_l6 AS (SELECT DISTINCT p FROM hg_n6)
SELECT a.ip, i.id FROM hg_a4 AS a
  JOIN {indicators} AS i ON i.value = a.t
  WHERE i.kind = 'ip'
UNION ALL
SELECT x.ip, n.id FROM (
  SELECT a.ip, l.p, a.k >> (32 - l.p) AS key FROM hg_a4 AS a, hg_l4 AS l) AS x
  JOIN hg_n4 AS n ON n.p = x.p AND n.key = x.key
UNION ALL
SELECT x.ip, n.id FROM (
  SELECT a.ip, l.p, a.u >> (128 - l.p)::UHUGEINT AS key FROM hg_a6 AS a, hg_l6 AS l) AS x
  JOIN hg_n6 AS n ON n.p = x.p AND n.key = x.key"""


def domain_matches_sql(names: str, indicators: str = "indicator") -> str:
    """A SELECT of ``(name, id)``: every ``domain`` indicator matching a name of the ``name``
    column of ``names`` (exact: the name; suffix: the name and below; subdomains: strictly
    below), case-insensitively and ignoring trailing dots. ``name`` is returned as given."""
    return f"""WITH
hg_n AS MATERIALIZED (
  SELECT name, rtrim(lower(name), '.') AS n
  FROM (SELECT DISTINCT name FROM {names} AS hg_src WHERE name IS NOT NULL))
SELECT d.name, i.id FROM hg_n AS d
  JOIN {indicators} AS i ON i.value = d.n
  WHERE i.kind = 'domain' AND coalesce(i.match, 'exact') IN ('exact', 'suffix')
UNION ALL
SELECT d.name, i.id FROM (SELECT name, unnest(hg_suffixes(n)) AS s FROM hg_n) AS d
  JOIN {indicators} AS i ON i.value = d.s
  WHERE i.kind = 'domain' AND i.match IN ('suffix', 'subdomains')"""


def hash_matches_sql(values: str, kinds: tuple[str, ...], indicators: str = "indicator") -> str:
    """A SELECT of ``(value, id)``: every indicator of one of ``kinds`` (ja3, ja3s, ja4)
    equal to the trimmed, lower-cased ``value`` column of ``values``. ``value`` is returned
    as given."""
    if not kinds or any(k not in FINGERPRINT_KINDS for k in kinds):
        raise ValueError(f"kinds must be some of {', '.join(FINGERPRINT_KINDS)}, not {kinds!r}")
    listed = ", ".join(f"'{k}'" for k in kinds)
    return f"""SELECT v.value, i.id FROM (
  SELECT value, lower(trim(value)) AS k
  FROM (SELECT DISTINCT value FROM {values} AS hg_src WHERE value IS NOT NULL)) AS v
  JOIN {indicators} AS i ON i.value = v.k
  WHERE i.kind IN ({listed})"""
