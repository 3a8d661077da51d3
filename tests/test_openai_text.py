"""StopText: OpenAI's stop rule over streamed pieces (the endpoint's tests cover it through the server)."""
import pytest

from griffin_trt.serving.openai.text import StopText


@pytest.mark.parametrize("pieces, stops, want", [
    (["Hello wor", "ld. Bye"], ("world",), "Hello "),  # a stop string split across pieces
    (["a\n", "\nb"], ("\n\n",), "a"),
    (["abc", "abd"], ("abx", "d"), "abcab"),  # the earliest stop wins, a false start is released
    (["x", "y"], (), "xy"),
])
def test_text_ends_before_the_first_stop_string(pieces, stops, want):
    st = StopText(stops)
    out = [st.add(p, last=i == len(pieces) - 1) for i, p in enumerate(pieces)]
    assert "".join(out) == want


def test_a_tail_that_may_begin_a_stop_waits_and_is_released_when_settled():
    st = StopText(("END",))
    assert st.add("done E") == "done "  # "E" may begin END
    assert st.add("N") == ""
    assert st.add("x") == "ENx"  # not END after all
    assert st.add("y EN", last=True) == "y EN"  # the last piece flushes
    assert not st.stopped
