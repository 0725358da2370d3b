"""A Streamlit front end of the prediction API, for clinicians and for the people who run it.

It talks to the API over HTTP (READMIT_API_URL), and reads MLflow (the Model page) and
monitor-db (the Monitoring page); `readmit ui` starts it.
"""
