"""Berth's Python launcher: serves the app defined in the entry file on $PORT.

- An ASGI app object named `app` (FastAPI, Starlette, ...) is served by uvicorn.
- A WSGI app object named `app` (Flask, Bottle, ...) is served by the
  standard library's threaded WSGI server (or waitress when installed).
- A file without an `app` object is run as a script that listens on $PORT itself.
"""

import importlib.util
import inspect
import os
import runpy
import socketserver
import sys


def main() -> None:
    entry = sys.argv[1] if len(sys.argv) > 1 else "main.py"
    path = os.path.join("/app/code", entry)
    port = int(os.environ.get("PORT", "8080"))
    sys.path.insert(0, os.path.dirname(path))
    sys.argv = [path]

    spec = importlib.util.spec_from_file_location("berth_app", path)
    if spec is None or spec.loader is None:
        sys.exit(f"berth: cannot load {entry}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["berth_app"] = module
    spec.loader.exec_module(module)

    app = getattr(module, "app", None)
    if app is None:
        # A script: run it as __main__ so its own server starts.
        runpy.run_path(path, run_name="__main__")
        return
    if is_asgi(app):
        try:
            import uvicorn
        except ImportError:
            sys.exit("berth: `app` is an ASGI app; add uvicorn to requirements.txt")
        print(f"berth: serving ASGI app from {entry} on port {port}", flush=True)
        uvicorn.run(app, host="0.0.0.0", port=port, log_level="info")
    elif callable(app):
        serve_wsgi(app, entry, port)
    else:
        sys.exit(f"berth: `app` in {entry} is neither an ASGI nor a WSGI application")


def is_asgi(app) -> bool:
    call = app if inspect.isfunction(app) or inspect.ismethod(app) else getattr(app, "__call__", None)
    if inspect.iscoroutinefunction(call):
        return True
    try:
        params = inspect.signature(call).parameters
    except (TypeError, ValueError):
        return False
    return len(params) == 3 and list(params)[0] == "scope"


def serve_wsgi(app, entry: str, port: int) -> None:
    try:
        from waitress import serve

        print(f"berth: serving WSGI app from {entry} on port {port} (waitress)", flush=True)
        serve(app, host="0.0.0.0", port=port)
        return
    except ImportError:
        pass
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    class Server(socketserver.ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class Handler(WSGIRequestHandler):
        def log_message(self, format, *args):  # noqa: A002 - wsgiref's signature
            sys.stderr.write("%s - %s\n" % (self.address_string(), format % args))

    print(f"berth: serving WSGI app from {entry} on port {port}", flush=True)
    with make_server("0.0.0.0", port, app, server_class=Server, handler_class=Handler) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
