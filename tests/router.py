"""A small OpenAI-compatible router for the scale-out tests: one HTTP/1.1 address in front
of several upstream servers, each request sent to the upstream with the fewest requests in
flight (ties in turn), the answer relayed chunk by chunk as it arrives (streams stay
streams). It counts what each upstream was sent, so a test can check the spread."""

from __future__ import annotations

import asyncio
import itertools
import threading

import h11
import httpx

HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"host"}


class Router:
    def __init__(self, upstreams: list[str]) -> None:
        self.upstreams = [u.rstrip("/") for u in upstreams]  # server roots (no /v1)
        self.in_flight = dict.fromkeys(self.upstreams, 0)
        self.sent = dict.fromkeys(self.upstreams, 0)
        self._turn = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> Router:
        threading.Thread(target=self._run, daemon=True, name="router").start()
        if not self._ready.wait(10):
            raise RuntimeError("the router did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._http = httpx.AsyncClient(timeout=None, limits=httpx.Limits(
            max_connections=None, max_keepalive_connections=None))
        server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
        await self._http.aclose()

    def _pick(self) -> str:
        least = min(self.in_flight.values())
        tied = [u for u in self.upstreams if self.in_flight[u] == least]
        return tied[next(self._turn) % len(tied)]

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request, body = await self._read_request(conn, reader)
                if request is None:
                    return
                await self._forward(conn, writer, request, body)
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError):
            return
        finally:
            writer.close()

    @staticmethod
    async def _read_request(conn: h11.Connection, reader: asyncio.StreamReader
                            ) -> tuple[h11.Request | None, bytes]:
        request, body = None, b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                conn.receive_data(data)
                if not data and request is None:
                    return None, b""
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return request, body
            elif isinstance(event, h11.ConnectionClosed):
                return None, b""

    async def _forward(self, conn: h11.Connection, writer: asyncio.StreamWriter,
                       request: h11.Request, body: bytes) -> None:
        upstream = self._pick()
        self.in_flight[upstream] += 1
        self.sent[upstream] += 1
        headers = [(k, v) for k, v in request.headers if k.lower() not in HOP]
        try:
            async with self._http.stream(request.method.decode(),
                                         upstream + request.target.decode(),
                                         headers=headers, content=body) as answer:
                out = [(k.encode(), v.encode()) for k, v in answer.headers.items()
                       if k.lower().encode() not in HOP]
                writer.write(conn.send(h11.Response(status_code=answer.status_code,
                                                    headers=[*out, (b"transfer-encoding",
                                                                    b"chunked")])))
                async for chunk in answer.aiter_raw():
                    writer.write(conn.send(h11.Data(data=chunk)))
                    await writer.drain()
                writer.write(conn.send(h11.EndOfMessage()))
                await writer.drain()
        finally:
            self.in_flight[upstream] -= 1
