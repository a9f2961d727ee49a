"""orchestrator_core: run prompts on local model hosts and hosted APIs with live status and fallback.

Importing this package stays light: no Streamlit, pandas or plotly on its import path.
"""
