"""`chargen serve`: a model behind an HTTP API and a playground page. requests.py checks what comes
in (no torch), engine.py is the one generation loop that owns the model, app.py the Starlette app
and uvicorn. Needs the serve extra: pip install "chargen[serve]".
"""
