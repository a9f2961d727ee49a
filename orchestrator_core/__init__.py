"""orchestrator_core: run prompts on local model hosts and hosted APIs with live status and fallback.

Importing this package stays light: no Streamlit, pandas or plotly on its import path.
"""

__version__ = "0.1.0"  # the one version: the User-Agent of every request says orchestrator-core/<this>
USER_AGENT = f"orchestrator-core/{__version__}"
