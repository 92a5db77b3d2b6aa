"""The baseline for bench/http.py: the demo's hello route as a plain Flask view."""
from flask import Flask

app = Flask(__name__)


@app.get("/hello")
def hello():
    return "Hello, world!\n", 200, {"Content-Type": "text/plain; charset=utf-8"}
