"""The operator console's helpers: Streamlit-free shaping (views, charts, auth) plus the Streamlit glue (state, gate)."""
