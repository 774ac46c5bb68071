"""Hypothesis strategies for request headers: a right, wrong or missing key, Cache-Control,
the X-Semcache-* controls, Content-Type and others, with odd values."""

from __future__ import annotations

from fuzz_request import FREE_KEY, KEY
from fuzz_values import pick
from hypothesis import strategies as st


def _latin1(text: str) -> bytes:
    return text.strip().encode("latin-1")


header_text = st.text(
    st.characters(
        codec="latin-1",
        exclude_categories=["Cc"],  # no control characters: h11 refuses to send them
    ),
    max_size=30,
).map(str.strip)
NUMBER_HEADER_VALUES = [
    "60",
    "0",
    "0.5",
    "1",
    "-1",
    "2",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "Infinity",
    "1e999",
    "1e308",
    "abc",
    "",
    "1_000",
    "0x10",
]
number_header = pick((3, st.sampled_from(NUMBER_HEADER_VALUES)), (1, header_text))
cache_control = pick(
    (
        4,
        st.sampled_from(
            [
                "no-cache",
                "no-store",
                "no-cache, no-store",
                "max-age=0",
                "max-age=60",
                "max-age=nan",
                "max-age=-1",
                "max-age=inf",
                "max-age=1e999",
                "max-age=",
                "max-age=abc",
                "private, max-age=10",
                "MAX-AGE=5, NO-STORE",
            ]
        ),
    ),
    (1, header_text),
)
name_header = pick((3, st.sampled_from(["fuzz", "a", "x" * 201, "é"])), (2, header_text))
content_type = pick(
    (
        4,
        st.sampled_from(
            [
                "application/json",
                "text/plain",
                "application/x-www-form-urlencoded",
                "multipart/form-data; boundary=x",
                "application/json; charset=latin-1",
            ]
        ),
    ),
    (1, header_text),
)
auth_headers = pick(
    (12, st.just({"Authorization": f"Bearer {KEY}"})),
    (4, st.just({"Authorization": f"Bearer {FREE_KEY}"})),
    (2, st.just({"x-api-key": KEY})),
    (1, st.just({})),
    (
        1,
        st.sampled_from(
            [
                {"Authorization": "Bearer sk-wrong"},
                {"Authorization": "Bearer"},
                {"Authorization": f"Basic {KEY}"},
                {"Authorization": f"bearer {KEY}"},
                {"x-api-key": ""},
            ]
        ),
    ),
    (1, header_text.map(lambda t: {"Authorization": t})),
)
OPTIONAL_HEADERS: dict[str, st.SearchStrategy[str]] = {
    "Cache-Control": cache_control,
    "X-Semcache-TTL": number_header,
    "X-Semcache-Threshold": number_header,
    "X-Semcache-Namespace": name_header,
    "X-Semcache-Doc-Version": name_header,
    "X-Semcache-User": name_header,
    "X-Semcache-Feature": name_header,
    "X-Semcache-Urgency": pick((2, st.sampled_from(["high", "low"])), (1, header_text)),
    "X-Semcache-Task": pick((2, st.sampled_from(["summarize", "nope"])), (1, header_text)),
    "anthropic-version": st.sampled_from(["2023-06-01", "bogus"]),
    "Content-Type": content_type,
    "Content-Encoding": st.sampled_from(["gzip", "identity", "br", "x"]),
    "Accept": st.sampled_from(["text/event-stream", "application/json", "*/*", "x/y"]),
}


@st.composite
def headers(draw: st.DrawFn) -> tuple[tuple[str, bytes], ...]:
    out = {k: v.encode("latin-1") for k, v in draw(auth_headers).items()}
    if draw(st.integers(0, 2)) > 0:
        for name, strategy in OPTIONAL_HEADERS.items():
            if draw(st.integers(0, 5)) == 0:
                out[name] = _latin1(draw(strategy))
    return tuple(out.items())
