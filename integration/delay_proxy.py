# delay_proxy.py PORT HOST:PORT DELAY_MS: a TCP relay on 127.0.0.1:PORT to HOST:PORT that
# holds everything the server sends for DELAY_MS before passing it on (in order, its end
# too); what the client sends goes at once. It stands for a far server behind a middlebox
# that ends TCP nearby: the client's socket measures a short RTT, the server's answers
# come late.
import asyncio
import sys

PORT = int(sys.argv[1])
HOST, TPORT = sys.argv[2].rsplit(":", 1)
DELAY = int(sys.argv[3]) / 1000.0


async def pump(reader, writer, delay):
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()

    async def sender():
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if data is None:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    task = asyncio.ensure_future(sender())
    try:
        while True:
            data = await reader.read(65536)
            queue.put_nowait((loop.time() + delay, data or None))
            if not data:
                break
        await task
    except (ConnectionError, OSError):
        task.cancel()


async def handle(creader, cwriter):
    try:
        sreader, swriter = await asyncio.open_connection(HOST, int(TPORT))
    except OSError:
        cwriter.close()
        return
    await asyncio.gather(pump(creader, swriter, 0), pump(sreader, cwriter, DELAY), return_exceptions=True)
    cwriter.close()
    swriter.close()


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", PORT)
    async with server:
        await server.serve_forever()


asyncio.run(main())
