"""Chat: check-and-load, streamed answers, automatic fallback with a visible trail, and a side-by-side compare."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import streamlit as st

from console import groups_view, state, views
from orchestrator_core.errors import InputError, OrchestratorError, StreamInterruptedError
from orchestrator_core.orchestrator import CallEvent
from orchestrator_core.types import KeyCheck, Message, ModelState, ModelStatus

HISTORY = "chat_history"
COMPARE = "compare_results"
PENDING = "chat_pending"  # a reply is due or running: the input is disabled and Stop is shown
PARTIAL = "chat_partial"  # the words streamed so far, kept for Stop

orch = state.orchestrator()
st.title("💬 Chat")

statuses: dict[str, ModelStatus] = {s.model_id: s for s in orch.statuses()}
if not statuses:
    st.info("No active model yet. Start a local host (LM Studio, Ollama, llama-server) or add a hosted model "
            "on the Models page, and add its key on the API keys page.")
    st.page_link("app_pages/models.py", label="Models", icon="🧠")
    st.stop()

groups = {g.name: g for g in orch.groups()}
# Groups first, then the models grouped by connection (local hosts first).
model_ids = groups_view.picker_options(list(groups.values()), views.grouped(statuses))
if st.session_state.get("chat_model") not in model_ids:
    keys_ok = {k.connection for k in orch.keys_of() if k.last_test_status is KeyCheck.OK}
    st.session_state["chat_model"] = views.default_model(statuses, state.metric(orch, "last_used_model"), keys_ok)


def params() -> dict[str, Any]:
    return {"temperature": st.session_state.get("chat_temperature", 0.7),
            "max_tokens": int(st.session_state.get("chat_max_tokens", 1024))}


def conversation(history: list[dict[str, Any]]) -> list[Message]:
    """What the model sees: the system prompt and answered turns; notices and failed prompts stay out."""
    system = (st.session_state.get("chat_system") or "").strip()
    messages: list[Message] = [{"role": "system", "content": system}] if system else []
    for item in history:
        if item["role"] in ("user", "assistant") and not item.get("failed"):
            messages.append({"role": item["role"], "content": item["content"]})
    return messages


def clear_conversation() -> None:
    st.session_state[HISTORY] = []
    st.session_state[COMPARE] = []


def switch_and_retry(model_id: str) -> None:
    st.session_state["chat_model"] = model_id
    st.session_state[PENDING] = True


def reset_and_retry(model_id: str) -> None:
    orch.reset_cooldowns(model_id)
    st.session_state["chat_model"] = model_id
    st.session_state[PENDING] = True


def queue_prompt() -> None:
    """The input's submit: the prompt joins the conversation and a reply is due; the input stays off meanwhile."""
    prompt = st.session_state.get("chat_prompt") or ""
    if prompt.strip():
        state.session_list(HISTORY).append({"role": "user", "content": prompt})
        st.session_state[PENDING] = True


def stop_reply() -> None:
    """Stop: this click's rerun ends the running reply (the core records the attempt as cancelled); keep its words."""
    if not st.session_state.pop(PENDING, False):
        return
    history = state.session_list(HISTORY)
    partial = "".join(st.session_state.pop(PARTIAL, []))
    if partial:
        history.append({"role": "assistant", "content": partial, "caption": "stopped by you · recorded as cancelled"})
    else:
        history.append({"role": "notice", "icon": "⏹️", "content": "Stopped before the first word (recorded as "
                        "cancelled). A model that was loading keeps loading on its host."})


class LoadView:
    """Turns the orchestrator's call events into st.status boxes: one per model that has to be loaded."""

    def __init__(self, slot: Any) -> None:
        self.slot = slot
        self.boxes: dict[str, tuple[Any, float]] = {}
        self.trail: dict[str, dict[str, Any]] = {}  # what each box said last, kept with the answer in the history

    def _keep(self, model_id: str, label: str, state: str, line: str = "") -> None:
        entry = self.trail.setdefault(model_id, {"label": label, "state": state, "lines": []})
        entry.update(label=label, state=state)
        if line:
            entry["lines"].append(line)

    def on_event(self, event: CallEvent) -> None:
        if event.kind == "loading":
            box = self.slot.status(views.load_label(event.model_id, 0.0), expanded=True)
            box.markdown(views.plain(event.detail))
            self.boxes[event.model_id] = (box, event.elapsed_s)
            self._keep(event.model_id, views.load_label(event.model_id, 0.0), "running", event.detail)
            return
        if event.model_id not in self.boxes:
            return
        box, started = self.boxes[event.model_id]
        elapsed = event.elapsed_s - started
        if event.kind == "load_progress":
            label = views.load_label(event.model_id, elapsed, event.detail)
            box.update(label=label)
            self._keep(event.model_id, label, "running")
        elif event.kind == "answering":
            label = views.plain(f"{event.model_id} is loaded ({elapsed:.1f} s)")
            box.update(label=label, state="complete", expanded=False)
            self._keep(event.model_id, label, "complete")
        elif event.kind == "attempt_failed":
            box.markdown(views.plain(event.detail))
            label = views.plain(f"{event.model_id} could not be used ({elapsed:.1f} s)")
            box.update(label=label, state="error")
            self._keep(event.model_id, label, "error", event.detail)


def render_loads(item: dict[str, Any]) -> None:
    for load in item.get("loads", []):
        with st.status(load["label"], state=load["state"] if load["state"] != "running" else "complete",
                       expanded=False):
            for line in load["lines"]:
                st.text(line)


def render(item: dict[str, Any], index: int) -> None:
    if item["role"] == "notice":
        with st.chat_message("system", avatar=item.get("icon", "⚠️")):
            render_loads(item)
            st.markdown(views.plain(item["content"]))  # notices quote hosts: model ids, error messages
            last = index == len(st.session_state[HISTORY]) - 1
            if item.get("reset") and last:
                st.button(f"Reset {views.plain(item['reset'])}'s cooldown and retry", key=f"reset_{index}",
                          on_click=reset_and_retry, args=(item["reset"],))
            target = item.get("switch_to")
            if target and last:
                st.button(f"Switch to {views.plain(target)} and retry", key=f"switch_{index}",
                          on_click=switch_and_retry, args=(target,))
        return
    with st.chat_message(item["role"]):
        render_loads(item)
        st.markdown(views.answer_markdown(item["content"]))
        if item.get("caption"):
            st.caption(views.plain(item["caption"]))


def show_stream(stream: Iterator[str]) -> None:
    """Like st.write_stream, but every rendering goes through views.answer_markdown (no image is fetched)."""
    slot = st.empty()
    text = ""
    for piece in stream:
        text += piece
        slot.markdown(views.answer_markdown(text))


def answer(history: list[dict[str, Any]]) -> None:
    """Send the conversation to the chosen model: check-and-load, stream, then record who answered."""
    model_id = st.session_state["chat_model"]
    auto = bool(st.session_state.get("chat_auto_fallback", True))
    prompt_item = next(item for item in reversed(history) if item["role"] == "user")
    prompt_item.pop("failed", None)  # a retry sends it again
    pieces: list[str] = []
    st.session_state[PARTIAL] = pieces

    def collect(stream: Iterator[str]) -> Iterator[str]:
        for piece in stream:
            pieces.append(piece)
            yield piece

    bubble = st.empty()  # emptied again when a call ends without a word or a load to show
    box = bubble.chat_message("assistant")
    with box:
        loads = LoadView(st.container())
        try:
            stream = orch.stream_chat(model_id, conversation(history), fallback=auto, on_event=loads.on_event,
                                      **params())
            show_stream(collect(iter(stream)))
        except OrchestratorError as exc:
            error: OrchestratorError | None = exc
        else:
            error = None
            result = stream.result
            if result is None:  # cannot happen: a stream that ended without an error set its result
                raise RuntimeError("the stream ended without its result")
            caption = views.answer_caption(result)
            st.caption(views.plain(caption))
    trail = list(loads.trail.values())
    if error is not None:
        if not pieces and not loads.boxes:
            bubble.empty()  # a refusal or a failure is a notice, never an empty assistant bubble
        failed(history, prompt_item, model_id, error, "".join(pieces), box)
        history[-1].setdefault("loads", trail)
        return
    history.append({"role": "assistant", "content": result.text, "caption": caption, "loads": trail})
    if result.fell_back:
        notice = {"role": "notice", "content": views.fallback_notice(result),
                  "icon": views.REFUSED_ICON if views.refused(result) else "🔀"}
        history.append(notice)
        render(notice, len(history) - 1)


def failed(history: list[dict[str, Any]], prompt: dict[str, Any], model_id: str, exc: OrchestratorError,
           partial: str, box: Any) -> None:
    """Say why in the conversation and offer the best alternative with a one-click switch."""
    if isinstance(exc, InputError):  # the prompt itself is the problem: another model would refuse it too
        prompt["failed"] = True
        notice = {"role": "notice", "content": exc.message, "icon": "✋"}
        history.append(notice)
        render(notice, len(history) - 1)
        return
    if isinstance(exc, StreamInterruptedError) and partial:
        caption = views.cut_caption(model_id, exc)
        box.caption(caption)
        history.append({"role": "assistant", "content": partial, "caption": caption})
    else:
        prompt["failed"] = True
    alternative = orch.suggest_alternative(model_id)
    cooling = orch.cooldown(model_id) if views.only_cooling(model_id, exc) else None
    notice = {"role": "notice", "icon": "⏸️" if cooling else views.notice_icon(exc),
              "content": views.cooldown_notice(cooling, alternative) if cooling
              else views.failure_notice(model_id, exc, alternative),
              "reset": model_id if cooling else None,
              "switch_to": alternative if not isinstance(exc, StreamInterruptedError) else None}
    history.append(notice)
    render(notice, len(history) - 1)


# -- controls ----------------------------------------------------------------------------------------
top = st.columns([3, 1])
# Entries are plain ids and the status is a caption: see views.picker_status for why.
chosen_model = top[0].selectbox("Model", model_ids, key="chat_model",
                                help="🌐 hosted, ready · ✅ loaded · 🔄 loading · 💤 not loaded (loaded on send) · "
                                     "⏸️ cooling down · ❌ unavailable")
top[0].caption(views.plain(f"Group: {groups_view.chain(groups[chosen_model].members)}") if chosen_model in groups
               else views.picker_status(statuses.get(chosen_model)))
top[1].toggle("Automatic fallback", value=True, key="chat_auto_fallback",
              help="When the model fails, answer with the best alternative and say so.")
with st.expander("Settings"):
    st.text_area("System prompt", key="chat_system", placeholder="You are a helpful assistant.")
    cols = st.columns(3)
    cols[0].slider("Temperature", 0.0, 2.0, 0.7, 0.05, key="chat_temperature")
    cols[1].number_input("Max tokens", min_value=1, max_value=200_000, value=1024, step=64, key="chat_max_tokens")
    cols[2].button("Clear conversation", key="chat_clear", on_click=clear_conversation)

chat_tab, compare_tab = st.tabs(["Conversation", "Compare models"])

with chat_tab:
    history = state.session_list(HISTORY)
    for i, item in enumerate(history):
        render(item, i)
    busy = bool(st.session_state.get(PENDING)) and any(i["role"] == "user" for i in history)
    # The reply and Stop are drawn into slots above the input: drawn after it, the reply showed below the input
    # (in a tab the input is not pinned to the bottom) until the next rerun.
    reply, stop_slot = st.container(), st.container()
    # Disabled while a reply runs: a prompt sent then would rerun the page and silently drop the running reply.
    st.chat_input("Ask something" if not busy else "Answering… (Stop to send another prompt)", key="chat_prompt",
                  on_submit=queue_prompt, disabled=busy)
    if busy:
        stop_slot.button("⏹️ Stop", key="chat_stop", on_click=stop_reply,
                         help="Stop the answer (or the load wait); the attempt is recorded as cancelled")
        with reply:
            answer(history)
        st.session_state.pop(PENDING, None)
        st.session_state.pop(PARTIAL, None)
        st.rerun()  # turn the input back on


# -- compare -----------------------------------------------------------------------------------------
class CompareColumn:
    """One model's column while Compare runs: a progress line with its clock and first-token time, the text."""

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        st.markdown(f"**{views.plain(model_id)}**")
        self.progress = st.empty()
        self.body = st.empty()
        self.caption = st.empty()
        self.phase = "asking"
        self.text = ""
        self.first_token_s: float | None = None
        self.item: dict[str, Any] | None = None  # set when the model is done

    def on(self, kind: str, value: Any, elapsed_s: float) -> None:
        if kind == "event" and value.kind == "loading":
            self.phase = "loading"
        elif kind == "event" and value.kind == "answering":
            self.phase = "asking"
        elif kind == "text":
            if self.first_token_s is None:
                self.first_token_s = elapsed_s
            self.phase, self.text = "streaming", self.text + value
            self.body.markdown(views.answer_markdown(self.text))
        elif kind == "done":
            self.item = {"model": self.model_id, "text": value.text, "caption": views.answer_caption(value)}
            self.body.markdown(views.answer_markdown(value.text))
        elif kind == "error":
            self.item = {"model": self.model_id, "text": None, "caption": views.compare_error(self.model_id, value)}
            self.body.error(views.plain(self.item["caption"]))

    def tick(self, elapsed_s: float) -> None:
        if self.item is not None:
            self.progress.empty()
            if self.item["text"] is not None:
                self.caption.caption(views.plain(self.item["caption"]))
            return
        self.progress.caption(views.compare_progress(self.phase, elapsed_s, self.first_token_s))


def stream_each(models: list[str], messages: list[Message]) -> list[dict[str, Any]]:
    """Every model answers the same prompt at once, without fallback, each streaming into its own column.

    The provider calls run on a pool; only this script thread touches the page, fed through a queue.
    """
    events: queue.Queue[tuple[str, str, Any]] = queue.Queue()
    stop = threading.Event()

    def one(model_id: str) -> None:
        try:
            stream = orch.stream_chat(model_id, messages, fallback=False,
                                      on_event=lambda e: events.put((model_id, "event", e)), **params())
            for piece in stream:
                if stop.is_set():
                    stream.close()  # the operator left: the attempt is recorded as cancelled
                    return
                events.put((model_id, "text", piece))
            events.put((model_id, "done", stream.result))
        except OrchestratorError as exc:
            events.put((model_id, "error", exc))

    columns = {}
    for column, model_id in zip(st.columns(len(models)), models, strict=True):
        with column:
            columns[model_id] = CompareColumn(model_id)
    started = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=len(models), thread_name_prefix="compare")
    try:
        futures = [pool.submit(one, model_id) for model_id in models]
        while any(c.item is None for c in columns.values()):
            try:
                model_id, kind, value = events.get(timeout=0.2)
            except queue.Empty:
                if all(f.done() for f in futures):
                    break  # a worker ended without a word: its exception is raised below
            else:
                columns[model_id].on(kind, value, time.monotonic() - started)
            for column in columns.values():
                column.tick(time.monotonic() - started)
        for future in futures:
            future.result()
    finally:
        stop.set()  # a rerun that interrupts this loop ends the streams too
        pool.shutdown(wait=False)
    return [c.item for c in columns.values() if c.item is not None]


with compare_tab:
    # "Select all" must not pick a model without a key, with a rejected key or on a host that is down; one
    # cooling down stays (its column says until when).
    compared = [m for m in model_ids if m in statuses]  # models only: a group answers with one of its members
    offered = [m for m in compared if statuses[m].state.usable or statuses[m].state is ModelState.COOLING_DOWN]
    left_out = [m for m in compared if m not in offered]
    chosen = st.multiselect("Models (2–4)", offered, key="compare_models", max_selections=4)
    for model_id in chosen:
        st.caption(f"{views.plain(model_id)}: {views.picker_status(statuses.get(model_id))}")
    if left_out:
        st.caption(views.plain("Not offered (they cannot answer now): " + ", ".join(
            f"{m} ({views.STATE_WORDS.get(statuses[m].state, statuses[m].state.value)})" for m in left_out)))
    # A form: typing then clicking Compare is one submit (outside a form the text area's change rerun ate the click).
    with st.form("compare_form", border=False):
        question = st.text_area("Prompt", key="compare_prompt")
        submitted = st.form_submit_button("Compare", key="compare_run", type="primary")
    if submitted and (len(chosen) < 2 or not question.strip()):
        st.warning("Pick 2 to 4 models and write a prompt, then press Compare.")
    elif submitted:
        st.session_state[COMPARE] = stream_each(chosen, conversation([{"role": "user", "content": question}]))
        st.rerun()  # the chips above show the states the answers left (a model loaded to answer)
    results = st.session_state.get(COMPARE) or []
    if results:
        for column, item in zip(st.columns(len(results)), results, strict=True):
            with column:
                st.markdown(f"**{views.plain(item['model'])}**")
                if item["text"] is None:
                    st.error(views.plain(item["caption"]))
                else:
                    st.markdown(views.answer_markdown(item["text"]))
                    st.caption(views.plain(item["caption"]))
