"""The coordinator's origin seed, in our own code: a BitTorrent seed that reveals its pieces so
that fetchers trade most of a bundle among themselves (BEP 16's idea, done at the handshake's
end rather than during it). One concept per module:

    bencoding   bencode and a bounded bdecode (what comes from a peer is capped)
    metainfo    a .torrent as the origin serves it: the info dict's bytes, pieces, the file
    peerwire    the peer wire protocol's messages (BEP 3, 6 fast, 10 extension, 9 ut_metadata):
                bytes in, messages out; messages in, bytes out; no sockets
    reveal      which pieces each fetcher is shown and served: pure rules, no I/O
    server      the asyncio server: connections, rates, timeouts, caps (the I/O edge)
"""
