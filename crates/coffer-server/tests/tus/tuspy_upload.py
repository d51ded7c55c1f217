"""Uploads a file to a coffer server with tuspy, a third-party tus client.

    python3 tuspy_upload.py URL TOKEN FILE CHUNK_SIZE
The server's certificate is trusted through REQUESTS_CA_BUNDLE.
"""
import sys

from tusclient import client

url, token, path, chunk = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
tus = client.TusClient(url, headers={"Authorization": f"Bearer {token}"})
uploader = tus.uploader(path, chunk_size=chunk, metadata={"note": "from tuspy"})
uploader.upload()
print(uploader.url)
