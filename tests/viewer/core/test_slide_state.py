"""The slide page's state steps that need no page: next / previous along the browse list, and
what is dropped when another slide is shown (viewer/core/slide_state.py)."""

from __future__ import annotations

from typing import Any

from viewer.core import address, slide_state

IDS = ("a", "b", "c")


def test_nav_request_moves_along_the_browse_list_once() -> None:
    state: dict[str, Any] = {"slide_pick": "b", slide_state.NAV_REQUEST: 1}
    slide_state.apply_nav_request(state, IDS)
    assert state["slide_pick"] == "c" and slide_state.NAV_REQUEST not in state
    slide_state.apply_nav_request(state, IDS)  # no request: nothing moves
    assert state["slide_pick"] == "c"
    state[slide_state.NAV_REQUEST] = 1  # past the end: stays on the last slide
    slide_state.apply_nav_request(state, IDS)
    assert state["slide_pick"] == "c"
    state[slide_state.NAV_REQUEST] = -1
    slide_state.apply_nav_request(state, IDS)
    assert state["slide_pick"] == "b"


def test_browse_nav_says_which_neighbours_exist() -> None:
    assert slide_state.browse_nav({"slide_pick": "a"}, IDS) == {"has_prev": False, "has_next": True}
    assert slide_state.browse_nav({"slide_pick": "c"}, IDS) == {"has_prev": True, "has_next": False}
    assert slide_state.browse_nav({"slide_pick": "a"}, ()) == {"has_prev": False, "has_next": False}


def test_another_slide_drops_what_belonged_to_the_previous_one() -> None:
    state: dict[str, Any] = {"ov_label": "x", "patch_pick": 3}
    assert slide_state.forget_previous_slide(state, "a")  # the first slide keeps its label
    assert state == {"ov_label": "x", "patch_pick": 3, address.SLIDE_SHOWN_KEY: "a"}
    assert not slide_state.forget_previous_slide(state, "a")  # the same slide: nothing changes
    state.update({slide_state.GOTO_KEY: {"nonce": 1}, slide_state.MISMATCH_KEY: True})
    state[address.VIEWPORT_KEY] = {"x": 1}
    assert slide_state.forget_previous_slide(state, "b")
    assert state == {address.SLIDE_SHOWN_KEY: "b"}


def test_key_u_opens_the_next_unreviewed_slide_the_panel_found_for_the_slide_shown() -> None:
    state: dict[str, Any] = {"slide_pick": "a", "dz": {"nav": "unreviewed"}}
    assert slide_state.browse_nav(state, IDS, reviewing=True)["unreviewed"] is True  # key u on
    slide_state.on_nav(state, "dz")
    assert slide_state.OPEN_REQUEST not in state  # the panel has not looked yet
    state[slide_state.NEXT_UNREVIEWED_KEY] = ("a", "c")
    slide_state.on_nav(state, "dz")
    assert state[slide_state.OPEN_REQUEST] == "c" and slide_state.NAV_REQUEST not in state
    state.pop(slide_state.OPEN_REQUEST)
    state["slide_pick"] = "b"  # found for another slide: stale, not used
    slide_state.on_nav(state, "dz")
    assert slide_state.OPEN_REQUEST not in state
    state[slide_state.NEXT_UNREVIEWED_KEY] = ("b", None)  # everything reviewed
    slide_state.on_nav(state, "dz")
    assert slide_state.OPEN_REQUEST not in state
    assert "unreviewed" not in slide_state.browse_nav(state, IDS)  # not a review context
