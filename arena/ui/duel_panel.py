"""The two-answer panel, shared by the anonymous battle and the side-by-side tab.

One builder serves both modes: the only differences are whether the
volunteer picks the models and whether names are shown before the vote.
Handlers hold nothing but an opaque battle id in `gr.State` (server-side);
every rule is checked by `ArenaService`.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterator

import gradio as gr

from arena.battle import SIDES, Leaving, Mode, RuleViolation
from arena.limits import client_network
from arena.service import SAME_MODEL_TWICE, ArenaService, BattleView
from arena.ui.battle_text import (ANSWERING, LEFT_UNVOTED, SIDE_LABELS, VOTE_LABELS, intro, receipt_text, shown_conversations,
                                  status_line)
from arena.wording import NEW_ROUND

log = logging.getLogger("arena")

# (outcome stored, button label, short name used in element ids and API names)
VOTES = tuple(zip(VOTE_LABELS, VOTE_LABELS.values(), ("a", "b", "tie", "bothbad"), strict=True))


class DuelPanel:
    def __init__(self, service: ArenaService, mode: Mode, key: str, generation_slots: int):
        self.service = service
        self.generation_slots = generation_slots  # battles generating at once; the rest wait in Gradio's queue
        self.mode = mode
        self.key = key  # prefix of elem_ids, so tests and CSS can find each tab's widgets
        self.vote_events: list = []

    def build(self) -> None:
        names = self._built_names = self.service.model_names()
        # Gradio drops a closed page's state an hour after the tab goes (in case it is reopened);
        # an unvoted battle then ends as abandoned instead of staying open until the next restart.
        self.battle_id = gr.State(None, delete_callback=_battle_closer(self.service))
        self.pickers: list[gr.Dropdown] = []
        if self.mode is Mode.NAMED:
            with gr.Row():
                for side, default in zip(SIDES, names[:2]):
                    self.pickers.append(gr.Dropdown(names, value=default, label=SIDE_LABELS[side], elem_id=f"{self.key}-pick-{side}",
                                                    elem_classes=["arena-picker"]))
        # Side by side, each chat is labelled with its picked model from the start (a new pick relabels it).
        labels = _chat_labels({side: picker.value for side, picker in zip(SIDES, self.pickers)} or None)
        with gr.Row():
            self.chats = {
                # autoscroll off: the page's script brings each new prompt to the top (arena/ui/page.js).
                side: gr.Chatbot(label=labels[side], height=420, feedback_options=None, buttons=["copy"], autoscroll=False,
                                 sanitize_html=True, render_markdown=True, elem_id=f"{self.key}-chat-{side}",
                                 elem_classes=["arena-chat"])
                for side in SIDES
            }
        self.status = gr.Markdown(self._intro(), elem_id=f"{self.key}-status")  # loading news comes with the page load
        with gr.Row():
            # min_width 0: on a phone the four stay in one row instead of four, so the prompt stays in sight
            self.vote_buttons = [gr.Button(label, interactive=False, min_width=0, elem_id=f"{self.key}-vote-{short}",
                                           elem_classes=["vote-button"])
                                 for _, label, short in VOTES]
        with gr.Row():
            # The label is never shown but names the box for screen readers, which would otherwise say "Textbox".
            self.prompt = gr.Textbox(placeholder=_FIRST_PROMPT, label="Prompt", show_label=False, scale=6,
                                     elem_id=f"{self.key}-prompt", elem_classes=["arena-prompt"], max_lines=8)
            self.send = gr.Button("Send", variant="primary", scale=1, elem_id=f"{self.key}-send")
        with gr.Row():
            self.regenerate_button = gr.Button("Regenerate", interactive=False, elem_id=f"{self.key}-regenerate")
            self.new_round = gr.Button("New round", elem_id=f"{self.key}-new-round")
        self._wire()

    # --- wiring -------------------------------------------------------------

    @property
    def _outputs(self) -> list:
        return [self.battle_id, self.chats["a"], self.chats["b"], self.status, self.prompt, self.send,
                self.regenerate_button, *self.vote_buttons, self.new_round, *self.pickers]

    def _wire(self) -> None:
        ask_inputs = [self.prompt, self.battle_id, *self.pickers]
        # New round waits from the click until the first answers arrive: before that, the page does not yet
        # hold the battle's id, so New round could not stop it and the battle would appear after all.
        asking = gr.on([self.send.click, self.prompt.submit], _new_round_waits, None, [self.new_round], queue=False,
                       api_visibility="private").then(
            self._ask, ask_inputs, self._outputs, api_name=f"{self.key}_ask", api_visibility="undocumented",
            concurrency_id="generation", concurrency_limit=self.generation_slots)
        regenerating = self.regenerate_button.click(_new_round_waits, None, [self.new_round], queue=False,
                                                    api_visibility="private").then(
            self._regenerate, [self.battle_id, *self.pickers], self._outputs, api_name=f"{self.key}_regenerate",
            api_visibility="undocumented", concurrency_id="generation", concurrency_limit=self.generation_slots)
        for (outcome, _, short), button in zip(VOTES, self.vote_buttons):
            # A vote is a quick write: it skips the queue that generations wait in (one plain request, no stream).
            event = button.click(self._voter(outcome), [self.battle_id], self._outputs,
                                 api_name=f"{self.key}_vote_{short}", api_visibility="undocumented", queue=False)
            self.vote_events.append(event)
        # New round also stops a battle mid-answer (a stalled model need not hold the page until its
        # timeout): the service stops the stream, which ends the battle and clears the panel.
        leaving = self.new_round.click(self._leave, [self.battle_id, *self.pickers], self._outputs,
                                       api_name=f"{self.key}_new_round", api_visibility="undocumented", queue=False)
        for picker in self.pickers:  # another pair means another battle
            picker.change(self._leave, [self.battle_id, *self.pickers], self._outputs, api_visibility="private")
        # The page's script (arena/ui/page.js) then reads out a status the event left as it was (the same
        # refusal twice), and gives the prompt box back the keyboard focus it lost while disabled.
        for event in (asking, regenerating, *self.vote_events):
            event.then(None, js=f"() => window.arenaEventDone?.('{self.key}', true)", queue=False, api_visibility="private")
        leaving.then(None, js=f"() => window.arenaEventDone?.('{self.key}', false)", queue=False, api_visibility="private")

    @property
    def page_parts(self) -> dict:
        """The element ids the page's script works with (see `arena.ui.look.page_script`)."""
        return {"key": self.key, "status": self.status.elem_id, "prompt": self.prompt.elem_id, "send": self.send.elem_id,
                "chat": self.chats["a"].elem_id, "chats": [chat.elem_id for chat in self.chats.values()],
                "pickers": [picker.elem_id for picker in self.pickers], "answering": ANSWERING}

    # --- handlers -------------------------------------------------------------

    def _ask(self, prompt: str, battle_id: str | None, pick_a: str | None = None, pick_b: str | None = None,
             request: gr.Request = None) -> Iterator[tuple]:
        chosen = (pick_a, pick_b) if self.mode is Mode.NAMED else None
        views = functools.partial(self.service.ask, battle_id, prompt, _address(request), self.mode, chosen)
        yield from self._answering(views, pick_a, pick_b, clear_prompt=True)

    def _regenerate(self, battle_id: str | None, pick_a: str | None = None, pick_b: str | None = None,
                    request: gr.Request = None) -> Iterator[tuple]:
        views = functools.partial(self.service.regenerate, battle_id, _address(request))
        yield from self._answering(views, pick_a, pick_b)

    def _answering(self, views: Callable[[], Iterator], pick_a: str | None, pick_b: str | None,
                   clear_prompt: bool = False) -> Iterator[tuple]:
        """The panel while both models answer; a refusal, before the first view or after, in the status line.
        `clear_prompt`: the first view empties the prompt box (a prompt that was sent)."""
        try:
            for number, view in enumerate(views()):
                yield self._fresh(pick_a, pick_b, left=True, unanswered=view.unanswered_prompt) if view.left else self._render(
                    view, clear_prompt=clear_prompt and number == 0)
        except RuleViolation as refusal:
            yield self._refusal(refusal)

    def _voter(self, outcome: str):
        """One handler per button; the outcome is fixed on the server, not sent by the page."""

        def vote(battle_id: str | None, request: gr.Request) -> tuple:
            return self._vote(battle_id, outcome, request)

        return vote

    def _vote(self, battle_id: str | None, outcome: str, request: gr.Request) -> tuple:
        try:
            receipt = self.service.vote(battle_id, _address(request), outcome)
        except RuleViolation as refusal:
            return self._refusal(refusal)
        view = self.service.revealed_view(battle_id, _address(request))
        counted = self.service.config.settings.count_named_votes
        return self._render(view, voted=True, status=receipt_text(receipt, self.mode, counted))

    def _leave(self, battle_id: str | None, pick_a: str | None = None, pick_b: str | None = None,
               request: gr.Request = None) -> tuple:
        leaving = self.service.abandon(battle_id, _address(request))
        if leaving is Leaving.STOPPING:
            return tuple(gr.skip() for _ in self._outputs)  # the stopping stream clears the panel itself
        return self._fresh(pick_a, pick_b, left=leaving is Leaving.ENDED)

    def _fresh(self, pick_a: str | None = None, pick_b: str | None = None, left: bool = False,
               unanswered: str | None = None) -> tuple:
        """An empty panel; side by side, its chats are labelled with the models picked for the next battle.

        `left`: a battle was just ended unvoted, which the status says, as its answers vanish with it.
        `unanswered`: the prompt it was answering, given back to the box.
        """
        picked = {"a": pick_a, "b": pick_b} if self.mode is Mode.NAMED and pick_a and pick_b else None
        status = LEFT_UNVOTED if left else self._intro()
        if picked is not None and pick_a == pick_b:  # said at once, not only after Send
            status = f"⚠️ {SAME_MODEL_TWICE}" + (f" {LEFT_UNVOTED}" if left else "")
        return self._render(BattleView(battle_id=None, names=picked, unanswered_prompt=unanswered), status=status)

    def _intro(self) -> str:
        return intro(self.mode, self.service.config.settings.count_named_votes)

    @property
    def idle_outputs(self) -> list:
        """What `idle_state` sets: the page is built once, before the models load, and shown many times after."""
        return [self.status, self.send, *self.pickers]

    def idle_state(self, battle_id: str | None, *chosen: str | None) -> list:
        """A panel with no battle: Send once the models are ready, the intro, and the models that can battle.

        A panel holding a battle is left alone: its status is the battle's, and a new picker value would end it.
        The loading news is the page's banner, not repeated here; while it shows, the status keeps what it says
        (a prompt sent too early is told why, and the answer must not vanish at the next poll).
        """
        if battle_id is not None:
            return [gr.skip() for _ in self.idle_outputs]
        ready = self.service.ready
        return [self._intro() if ready else gr.skip(), gr.update(interactive=ready), *self.refresh_pickers(*chosen)]

    def refresh_pickers(self, *chosen: str | None) -> list:
        """Offer the models that can battle now: the page is built before they load, and some may fail to."""
        names = self.service.model_names()
        updates, taken = [], set()
        for value in chosen:
            keep = value in names and value not in taken
            pick = value if keep else next((name for name in names if name not in taken and name not in chosen), None)
            taken.add(pick)
            # An unchanged value is not sent back: setting it would fire `change` and clear the battle. Nor
            # are the choices the page was built with: redrawing the list would drop a pick being made.
            if keep and names == self._built_names:
                updates.append(gr.skip())
            else:
                updates.append(gr.update(choices=names) if keep else gr.update(choices=names, value=pick))
        return updates

    # --- rendering ------------------------------------------------------------

    def _render(self, view: BattleView, *, clear_prompt: bool = False, voted: bool = False,
                status: str | None = None) -> tuple:
        labels = _chat_labels(view.names)
        conversations = shown_conversations(view)
        finished = voted or view.failed
        if view.battle_id is None:
            placeholder = _FIRST_PROMPT
        elif finished:
            placeholder = NEW_ROUND.rstrip(".")
        else:
            placeholder = "Type a prompt (or a follow-up for both models)"
        prompt = gr.update(placeholder=placeholder, interactive=not view.generating)
        if clear_prompt:
            prompt["value"] = ""
        if view.unanswered_prompt:  # the box was off while it was answered: nothing typed since is lost
            prompt["value"] = view.unanswered_prompt
        return (
            view.battle_id,
            *[gr.update(value=conversations[side], label=labels[side]) for side in SIDES],
            status_line(view) if status is None else status,
            prompt,
            gr.update(interactive=not view.generating),
            gr.update(interactive=view.votable),
            *[gr.update(interactive=view.votable) for _ in VOTES],
            gr.update(interactive=True),  # New round: also while answering, to stop
            # The pickers wait until the vote or New round: another pair would end the battle by accident.
            *[gr.update(interactive=not (view.generating or view.votable)) for _ in self.pickers],
        )

    def _refusal(self, refusal: RuleViolation) -> tuple:
        """Say why, and leave everything else as it was (New round usable again: nothing is starting)."""
        skipped = [gr.skip() for _ in self._outputs]
        skipped[self._outputs.index(self.status)] = f"⚠️ {refusal}"
        skipped[self._outputs.index(self.new_round)] = gr.update(interactive=True)
        return tuple(skipped)


_FIRST_PROMPT = "Type a prompt and press Enter"


def _chat_labels(names: dict[str, str | None] | None) -> dict[str, str]:
    """"Model A", or "Model A: name" where the name may be shown (side by side, or after the vote)."""
    return {side: SIDE_LABELS[side] + (f": {names[side]}" if names and names[side] else "") for side in SIDES}


def _new_round_waits() -> dict:
    return gr.update(interactive=False)


def _address(request: gr.Request | None) -> str:
    """The client's network, from its socket address: the one thing a client cannot choose (unlike session_hash)."""
    return client_network(getattr(getattr(request, "client", None), "host", None))


def _battle_closer(service: ArenaService):
    """A plain function, not a bound method: Gradio deep-copies the page's config on every page load, and
    `copy.deepcopy` copies a method's object (the panel, the service, the models' weights) but never a function."""

    def close(battle_id: str | None) -> None:
        try:
            service.page_closed(battle_id)
        except Exception:
            log.exception("could not close battle %s", battle_id)

    def page_closed(battle_id: str | None) -> None:
        # Gradio calls this from its event loop: a database write that waits for a lock would stall every page.
        if battle_id is not None:
            threading.Thread(target=close, args=(battle_id,), name="close-battle", daemon=True).start()

    return page_closed
