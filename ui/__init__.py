"""The Streamlit app of lift-search (`lift-search ui --index IDX`): presentation only, over search.SearchEngine."""
