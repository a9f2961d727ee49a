"""The operator console's helpers: Streamlit-free shaping (views, charts, auth) and the Streamlit glue (state, gate)."""
