"""A TCP proxy in front of the relay that can hold back its answers, for the stories.

Bytes from the device go through at once; bytes from the relay wait `delay` ms first (TLS
passes through untouched: the handshake's answers wait too). A control port takes one
command per connection and answers one line:

    delay <ms>   set the delay for bytes read from now on; answers "ok"
    open         answers how many device connections are open

Run by scripts/test-bindings.sh:  python3 delay_proxy.py <relay host:port>
It prints "proxy <port> <control port>" once listening, both on 127.0.0.1.
"""

import asyncio
import sys


class Proxy:
    def __init__(self, upstream_host, upstream_port):
        self.upstream = (upstream_host, upstream_port)
        self.delay_ms = 0
        self.open = 0

    async def pipe(self, reader, writer, delayed):
        """Copies reader to writer; when `delayed`, each piece leaves `delay` ms after it came."""
        loop = asyncio.get_running_loop()
        queue = asyncio.Queue()

        async def read():
            try:
                while data := await reader.read(64 * 1024):
                    due = loop.time() + (self.delay_ms / 1000 if delayed else 0)
                    await queue.put((due, data))
            except (ConnectionError, OSError):
                pass
            await queue.put((0, b""))

        async def write():
            try:
                while True:
                    due, data = await queue.get()
                    if not data:
                        break
                    await asyncio.sleep(max(0, due - loop.time()))
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        await asyncio.gather(read(), write())

    async def serve(self, device_reader, device_writer):
        self.open += 1
        try:
            relay_reader, relay_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            self.open -= 1
            device_writer.close()
            return
        try:
            await asyncio.gather(
                self.pipe(device_reader, relay_writer, delayed=False),
                self.pipe(relay_reader, device_writer, delayed=True),
            )
        finally:
            self.open -= 1

    async def control(self, reader, writer):
        line = (await reader.readline()).decode().split()
        if line[:1] == ["delay"] and len(line) == 2:
            self.delay_ms = int(line[1])
            writer.write(b"ok\n")
        elif line == ["open"]:
            writer.write(f"{self.open}\n".encode())
        else:
            writer.write(b"?\n")
        await writer.drain()
        writer.close()


async def control(address, command):
    """Sends one command to a proxy's control port ("127.0.0.1:port") and returns its answer."""
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"{command}\n".encode())
    await writer.drain()
    answer = (await reader.readline()).decode().strip()
    writer.close()
    return answer


async def main(upstream):
    host, port = upstream.rsplit(":", 1)
    proxy = Proxy(host, int(port))
    server = await asyncio.start_server(proxy.serve, "127.0.0.1", 0)
    controls = await asyncio.start_server(proxy.control, "127.0.0.1", 0)
    print(f"proxy {server.sockets[0].getsockname()[1]} {controls.sockets[0].getsockname()[1]}",
          flush=True)
    async with server, controls:
        await asyncio.gather(server.serve_forever(), controls.serve_forever())


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: delay_proxy.py <relay host:port>")
    try:
        asyncio.run(main(sys.argv[1]))
    except KeyboardInterrupt:
        pass
