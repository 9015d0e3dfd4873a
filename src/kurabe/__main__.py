from kurabe.cli import app

app()
