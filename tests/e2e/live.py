"""A real `streamlit run` of the console on a free 127.0.0.1 port, and a bare websocket client for it.

The client speaks Streamlit's own protocol (protobuf BackMsg / ForwardMsg on /_stcore/stream), so a test
can do what any client on the network can: rerun with chosen widget values, or send a clear-cache message.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import websocket
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState

from tests.helpers import stop_process

APP = Path(__file__).resolve().parents[2] / "streamlit_app.py"
UNLOCK = "FormSubmitter:console_sign_in-Unlock"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Console:
    """`streamlit run /abs/path/streamlit_app.py`, started in cwd with env; stopped by stop()."""

    def __init__(self, cwd: Path, env: Mapping[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        command = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(self.port),
                   "--server.address", "127.0.0.1", "--server.headless", "true"]
        with log.open("wb") as out:
            self.process = subprocess.Popen(command, cwd=cwd, env=dict(env), stdout=out, stderr=subprocess.STDOUT)
        self._wait_healthy()

    def _wait_healthy(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"streamlit exited with {self.process.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/_stcore/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"streamlit did not become healthy:\n{self.log.read_text()}")

    def session(self) -> Session:
        return Session(self.url)

    def stop(self) -> None:
        stop_process(self.process)


@dataclass
class Page:
    """What one script run rendered: (element type, element proto) in order, and how the run ended."""

    elements: list[tuple[str, Any]] = field(default_factory=list)

    def of(self, kind: str) -> list[Any]:
        return [element for k, element in self.elements if k == kind]

    def texts(self, kind: str) -> list[str]:
        return [e.body for e in self.of(kind)]

    def widget_id(self, kind: str, key: str) -> str:
        """The id Streamlit gave the widget with this user key."""
        return next(str(e.id) for e in self.of(kind) if str(e.id).endswith(f"-{key}"))


class Session:
    """One websocket client session (like one browser tab)."""

    def __init__(self, base_url: str) -> None:
        self.ws = websocket.create_connection(base_url.replace("http", "ws", 1) + "/_stcore/stream",
                                              subprotocols=["streamlit"], timeout=60)

    def rerun(self, widgets: Iterable[WidgetState] = (), page: str = "") -> Page:
        """Run the script with these widget values, as a browser does on an interaction; wait for it to end."""
        message = BackMsg()
        message.rerun_script.query_string = ""
        message.rerun_script.page_name = page
        message.rerun_script.widget_states.widgets.extend(widgets)
        self.ws.send_binary(message.SerializeToString())
        return self.read_run()

    def read_run(self) -> Page:
        """ForwardMsgs up to the end of the current script run."""
        page = Page()
        while True:
            forward = ForwardMsg()
            forward.ParseFromString(self.ws.recv())
            kind = forward.WhichOneof("type")
            if kind == "delta" and forward.delta.WhichOneof("type") == "new_element":
                element = forward.delta.new_element
                name = element.WhichOneof("type")
                page.elements.append((str(name), getattr(element, str(name))))
            elif kind == "script_finished":
                if forward.script_finished != ForwardMsg.FINISHED_EARLY_FOR_RERUN:
                    return page
                page = Page()  # st.rerun(): the page that counts comes next

    def clear_cache(self) -> None:
        """The message behind the "Clear cache" menu item; any client can send it."""
        message = BackMsg()
        message.clear_cache = True
        self.ws.send_binary(message.SerializeToString())

    def sign_in(self, password: str) -> Page:
        form = self.rerun()
        return self.rerun([text_value(form.widget_id("text_input", "console_password"), password),
                           trigger(form.widget_id("button", UNLOCK))])

    def close(self) -> None:
        self.ws.close()


def text_value(widget_id: str, value: str) -> WidgetState:
    state = WidgetState(id=widget_id)
    state.string_value = value
    return state


def trigger(widget_id: str) -> WidgetState:
    return WidgetState(id=widget_id, trigger_value=True)


def chat_value(widget_id: str, text: str) -> WidgetState:
    state = WidgetState(id=widget_id)
    state.chat_input_value.data = text
    return state


def isolated_env(home: Path, **values: str) -> dict[str, str]:
    """The machine's environment without provider settings, plus ORCHESTRATOR_HOME and values."""
    env = {k: v for k, v in os.environ.items()
           if not k.endswith(("_API_KEY", "_BASE_URL")) and not k.startswith(("CONSOLE_", "STREAMLIT_"))
           and k not in ("DATABASE_URL", "ORCHESTRATOR_SECRET_KEY", "LOCAL_HOSTS")}
    env.update(ORCHESTRATOR_HOME=str(home), **values)
    return env
