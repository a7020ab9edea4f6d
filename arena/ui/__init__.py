"""The Gradio web app: a thin layer over `arena.service`."""
