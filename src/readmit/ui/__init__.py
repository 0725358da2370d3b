"""A Streamlit front end of the prediction API, for clinicians and for the people who run it.

It talks to the API over HTTP only (READMIT_API_URL); `readmit ui` starts it.
"""
