"""``python -m api``: the console and the API on one port, as `make run` starts them.

Address and port come from .streamlit/config.toml (127.0.0.1:8501), or STREAMLIT_SERVER_ADDRESS /
STREAMLIT_SERVER_PORT, like `streamlit run`; ``--address`` and ``--port`` override them. Uvicorn binds the
socket itself: a socket Streamlit pre-binds (``streamlit run`` of an st.App script) lacks TCP_NODELAY on
its connections and stalls each small answer for 40 ms.
"""

from __future__ import annotations

import argparse
import os
import sys

from .asgi import CONSOLE_SCRIPT, ROOT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api", description=__doc__.splitlines()[0])
    parser.add_argument("--address", default=None, help="default: server.address in .streamlit/config.toml")
    parser.add_argument("--port", type=int, default=None, help="default: server.port in .streamlit/config.toml")
    args = parser.parse_args(argv)

    import uvicorn  # noqa: PLC0415 - the server stack loads only when it is started
    from streamlit import config  # noqa: PLC0415 - the server stack loads only when it is started
    from streamlit.web.server.starlette import starlette_server  # noqa: PLC0415 - the server stack loads only when it is started

    os.chdir(ROOT)  # .env, ./data and .streamlit/ are the project's, wherever this was started from
    sys.path.insert(0, str(ROOT))
    config._main_script_path = str(CONSOLE_SCRIPT)  # as `streamlit run` does, before the config is read
    # STREAMLIT_SERVER_* as `streamlit run` reads them (its CLI maps them onto the options).
    address = args.address or os.environ.get("STREAMLIT_SERVER_ADDRESS") or config.get_option("server.address")
    port = args.port or int(os.environ.get("STREAMLIT_SERVER_PORT") or config.get_option("server.port"))
    address = address or "127.0.0.1"
    # The websocket settings `streamlit run` gives uvicorn (ping, message size, compression, TLS): a private
    # helper of Streamlit 1.67, pinned in requirements.txt.
    options = starlette_server._get_uvicorn_config_kwargs()
    print(f"Console and API: http://{address}:{port}  (API docs at /api/docs)", flush=True)
    uvicorn.run("api.asgi:app", host=address, port=port, **options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
