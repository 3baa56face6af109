"""QUIC Initial decryption against the RFC 9001 / RFC 9369 sample packets (client and server),
and against packets this file protects itself (checked to reproduce the RFC samples byte for
byte)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hopguard.parsers.base import ORIG, RESP, Malformed
from hopguard.parsers.quic import (
    MAX_CRYPTO,
    MAX_QUIET_SERVER_DATAGRAMS,
    QUIC_MVFST_D22,
    QUIC_MVFST_D27,
    QUIC_T050,
    QUIC_T051,
    QUIC_V1,
    QUIC_V2,
    QuicSession,
    initial_keys,
    looks_like_quic_initial,
)
from hopguard.parsers.tls import HELLO_RETRY_RANDOM, ClientHello, ServerHello

DCID = bytes.fromhex("8394c8f03e515708")

# RFC 9001 Appendix A.2 (and RFC 9369 Appendix A.2, same plaintext): the client Initial's
# payload, one CRYPTO frame with a ClientHello for "example.com", padded to 1162 bytes.
A2_PAYLOAD = bytes.fromhex(
    "060040f1010000ed0303ebf8fa56f12939b9584a3896472ec40bb863cfd3e868"
    "04fe3a47f06a2b69484c00000413011302010000c000000010000e00000b6578"
    "616d706c652e636f6dff01000100000a00080006001d00170018001000070005"
    "04616c706e000500050100000000003300260024001d00209370b2c9caa47fba"
    "baf4559fedba753de171fa71f50f1ce15d43e994ec74d748002b000302030400"
    "0d0010000e0403050306030203080408050806002d00020101001c0002400100"
    "3900320408ffffffffffffffff05048000ffff07048000ffff08011001048000"
    "75300901100f088394c8f03e51570806048000ffff"
) + bytes(917)
# The CRYPTO frame's data: the whole ClientHello handshake message (type 1, length 0xed).
A2_CRYPTO_DATA = A2_PAYLOAD[4 : 4 + 0xF1]

# RFC 9001 Appendix A.2: the protected 1200-byte datagram.
RFC9001_A2_PACKET = bytes.fromhex(
    "c000000001088394c8f03e5157080000449e7b9aec34d1b1c98dd7689fb8ec11"
    "d242b123dc9bd8bab936b47d92ec356c0bab7df5976d27cd449f63300099f399"
    "1c260ec4c60d17b31f8429157bb35a1282a643a8d2262cad67500cadb8e7378c"
    "8eb7539ec4d4905fed1bee1fc8aafba17c750e2c7ace01e6005f80fcb7df6212"
    "30c83711b39343fa028cea7f7fb5ff89eac2308249a02252155e2347b63d58c5"
    "457afd84d05dfffdb20392844ae812154682e9cf012f9021a6f0be17ddd0c208"
    "4dce25ff9b06cde535d0f920a2db1bf362c23e596d11a4f5a6cf3948838a3aec"
    "4e15daf8500a6ef69ec4e3feb6b1d98e610ac8b7ec3faf6ad760b7bad1db4ba3"
    "485e8a94dc250ae3fdb41ed15fb6a8e5eba0fc3dd60bc8e30c5c4287e53805db"
    "059ae0648db2f64264ed5e39be2e20d82df566da8dd5998ccabdae053060ae6c"
    "7b4378e846d29f37ed7b4ea9ec5d82e7961b7f25a9323851f681d582363aa5f8"
    "9937f5a67258bf63ad6f1a0b1d96dbd4faddfcefc5266ba6611722395c906556"
    "be52afe3f565636ad1b17d508b73d8743eeb524be22b3dcbc2c7468d54119c74"
    "68449a13d8e3b95811a198f3491de3e7fe942b330407abf82a4ed7c1b311663a"
    "c69890f4157015853d91e923037c227a33cdd5ec281ca3f79c44546b9d90ca00"
    "f064c99e3dd97911d39fe9c5d0b23a229a234cb36186c4819e8b9c5927726632"
    "291d6a418211cc2962e20fe47feb3edf330f2c603a9d48c0fcb5699dbfe58964"
    "25c5bac4aee82e57a85aaf4e2513e4f05796b07ba2ee47d80506f8d2c25e50fd"
    "14de71e6c418559302f939b0e1abd576f279c4b2e0feb85c1f28ff18f58891ff"
    "ef132eef2fa09346aee33c28eb130ff28f5b766953334113211996d20011a198"
    "e3fc433f9f2541010ae17c1bf202580f6047472fb36857fe843b19f5984009dd"
    "c324044e847a4f4a0ab34f719595de37252d6235365e9b84392b061085349d73"
    "203a4a13e96f5432ec0fd4a1ee65accdd5e3904df54c1da510b0ff20dcc0c77f"
    "cb2c0e0eb605cb0504db87632cf3d8b4dae6e705769d1de354270123cb11450e"
    "fc60ac47683d7b8d0f811365565fd98c4c8eb936bcab8d069fc33bd801b03ade"
    "a2e1fbc5aa463d08ca19896d2bf59a071b851e6c239052172f296bfb5e724047"
    "90a2181014f3b94a4e97d117b438130368cc39dbb2d198065ae3986547926cd2"
    "162f40a29f0c3c8745c0f50fba3852e566d44575c29d39a03f0cda721984b6f4"
    "40591f355e12d439ff150aab7613499dbd49adabc8676eef023b15b65bfc5ca0"
    "6948109f23f350db82123535eb8a7433bdabcb909271a6ecbcb58b936a88cd4e"
    "8f2e6ff5800175f113253d8fa9ca8885c2f552e657dc603f252e1a8e308f76f0"
    "be79e2fb8f5d5fbbe2e30ecadd220723c8c0aea8078cdfcb3868263ff8f09400"
    "54da48781893a7e49ad5aff4af300cd804a6b6279ab3ff3afb64491c85194aab"
    "760d58a606654f9f4400e8b38591356fbf6425aca26dc85244259ff2b19c41b9"
    "f96f3ca9ec1dde434da7d2d392b905ddf3d1f9af93d1af5950bd493f5aa731b4"
    "056df31bd267b6b90a079831aaf579be0a39013137aac6d404f518cfd4684064"
    "7e78bfe706ca4cf5e9c5453e9f7cfd2b8b4c8d169a44e55c88d4a9a7f9474241"
    "e221af44860018ab0856972e194cd934"
)

# RFC 9369 Appendix A.2: the same Initial, protected as QUIC version 2.
RFC9369_A2_PACKET = bytes.fromhex(
    "d76b3343cf088394c8f03e5157080000449ea0c95e82ffe67b6abcdb4298b485"
    "dd04de806071bf03dceebfa162e75d6c96058bdbfb127cdfcbf903388e99ad04"
    "9f9a3dd4425ae4d0992cfff18ecf0fdb5a842d09747052f17ac2053d21f57c5d"
    "250f2c4f0e0202b70785b7946e992e58a59ac52dea6774d4f03b55545243cf1a"
    "12834e3f249a78d395e0d18f4d766004f1a2674802a747eaa901c3f10cda5500"
    "cb9122faa9f1df66c392079a1b40f0de1c6054196a11cbea40afb6ef5253cd68"
    "18f6625efce3b6def6ba7e4b37a40f7732e093daa7d52190935b8da58976ff33"
    "12ae50b187c1433c0f028edcc4c2838b6a9bfc226ca4b4530e7a4ccee1bfa2a3"
    "d396ae5a3fb512384b2fdd851f784a65e03f2c4fbe11a53c7777c023462239dd"
    "6f7521a3f6c7d5dd3ec9b3f233773d4b46d23cc375eb198c63301c21801f6520"
    "bcfb7966fc49b393f0061d974a2706df8c4a9449f11d7f3d2dcbb90c6b877045"
    "636e7c0c0fe4eb0f697545460c806910d2c355f1d253bc9d2452aaa549e27a1f"
    "ac7cf4ed77f322e8fa894b6a83810a34b361901751a6f5eb65a0326e07de7c12"
    "16ccce2d0193f958bb3850a833f7ae432b65bc5a53975c155aa4bcb4f7b2c4e5"
    "4df16efaf6ddea94e2c50b4cd1dfe06017e0e9d02900cffe1935e0491d77ffb4"
    "fdf85290fdd893d577b1131a610ef6a5c32b2ee0293617a37cbb08b847741c3b"
    "8017c25ca9052ca1079d8b78aebd47876d330a30f6a8c6d61dd1ab5589329de7"
    "14d19d61370f8149748c72f132f0fc99f34d766c6938597040d8f9e2bb522ff9"
    "9c63a344d6a2ae8aa8e51b7b90a4a806105fcbca31506c446151adfeceb51b91"
    "abfe43960977c87471cf9ad4074d30e10d6a7f03c63bd5d4317f68ff325ba3bd"
    "80bf4dc8b52a0ba031758022eb025cdd770b44d6d6cf0670f4e990b22347a7db"
    "848265e3e5eb72dfe8299ad7481a408322cac55786e52f633b2fb6b614eaed18"
    "d703dd84045a274ae8bfa73379661388d6991fe39b0d93debb41700b41f90a15"
    "c4d526250235ddcd6776fc77bc97e7a417ebcb31600d01e57f32162a8560cacc"
    "7e27a096d37a1a86952ec71bd89a3e9a30a2a26162984d7740f81193e8238e61"
    "f6b5b984d4d3dfa033c1bb7e4f0037febf406d91c0dccf32acf423cfa1e70710"
    "10d3f270121b493ce85054ef58bada42310138fe081adb04e2bd901f2f13458b"
    "3d6758158197107c14ebb193230cd1157380aa79cae1374a7c1e5bbcb80ee23e"
    "06ebfde206bfb0fcbc0edc4ebec309661bdd908d532eb0c6adc38b7ca7331dce"
    "8dfce39ab71e7c32d318d136b6100671a1ae6a6600e3899f31f0eed19e3417d1"
    "34b90c9058f8632c798d4490da4987307cba922d61c39805d072b589bd52fdf1"
    "e86215c2d54e6670e07383a27bbffb5addf47d66aa85a0c6f9f32e59d85a44dd"
    "5d3b22dc2be80919b490437ae4f36a0ae55edf1d0b5cb4e9a3ecabee93dfc6e3"
    "8d209d0fa6536d27a5d6fbb17641cde27525d61093f1b28072d111b2b4ae5f89"
    "d5974ee12e5cf7d5da4d6a31123041f33e61407e76cffcdcfd7e19ba58cf4b53"
    "6f4c4938ae79324dc402894b44faf8afbab35282ab659d13c93f70412e85cb19"
    "9a37ddec600545473cfb5a05e08d0b209973b2172b4d21fb69745a262ccde96b"
    "a18b2faa745b6fe189cf772a9f84cbfc"
)

# RFC 9001 Appendix A.3 (and RFC 9369 Appendix A.3, same plaintext): the server Initial's
# payload, an ACK frame and a CRYPTO frame holding a ServerHello (TLS_AES_128_GCM_SHA256,
# extensions key_share and supported_versions), sent from connection ID f067a5502a4262b5 with
# packet number 1 in 2 bytes.
A3_PAYLOAD = bytes.fromhex(
    "02000000000600405a020000560303eefce7f7b37ba1d1632e96677825ddf739"
    "88cfc79825df566dc5430b9a045a1200130100002e00330024001d00209d3c94"
    "0d89690b84d08a60993c144eca684d1081287c834d5311bcf32bb9da1a002b00"
    "020304"
)
A3_SCID = bytes.fromhex("f067a5502a4262b5")
A3_SERVER_HELLO = A3_PAYLOAD[9:]  # after the ACK frame and the CRYPTO frame's header

# RFC 9001 Appendix A.3: the protected server Initial.
RFC9001_A3_PACKET = bytes.fromhex(
    "cf000000010008f067a5502a4262b5004075c0d95a482cd0991cd25b0aac406a"
    "5816b6394100f37a1c69797554780bb38cc5a99f5ede4cf73c3ec2493a1839b3"
    "dbcba3f6ea46c5b7684df3548e7ddeb9c3bf9c73cc3f3bded74b562bfb19fb84"
    "022f8ef4cdd93795d77d06edbb7aaf2f58891850abbdca3d20398c276456cbc4"
    "2158407dd074ee"
)

# RFC 9369 Appendix A.3: the same server Initial, protected as QUIC version 2.
RFC9369_A3_PACKET = bytes.fromhex(
    "dc6b3343cf0008f067a5502a4262b5004075d92faaf16f05d8a4398c47089698"
    "baeea26b91eb761d9b89237bbf87263017915358230035f7fd3945d88965cf17"
    "f9af6e16886c61bfc703106fbaf3cb4cfa52382dd16a393e42757507698075b2"
    "c984c707f0a0812d8cd5a6881eaf21ceda98f4bd23f6fe1a3e2c43edd9ce7ca8"
    "4bed8521e2e140"
)

DRAFT_29 = 0xFF00001D
RESERVED_VERSION = 0x1A2A3A4A  # 0x?a?a?a?a: forces version negotiation (RFC 9000 §15)


# --------------------------------------------------------------------------------------------
# A client-side packet protector (RFC 9001 §5.3-5.4), for hand-built scenarios
# --------------------------------------------------------------------------------------------


def varint(value: int) -> bytes:
    for size, prefix in ((1, 0x00), (2, 0x40), (4, 0x80), (8, 0xC0)):
        if value < 1 << (8 * size - 2):
            raw = bytearray(value.to_bytes(size, "big"))
            raw[0] |= prefix
            return bytes(raw)
    raise ValueError(value)


def crypto_frame(offset: int, data: bytes) -> bytes:
    return b"\x06" + varint(offset) + varint(len(data)) + data


def protect(
    payload: bytes,
    *,
    version: int = QUIC_V1,
    dcid: bytes = DCID,
    key_dcid: bytes | None = None,
    pn: int = 0,
    pn_len: int = 4,
    scid: bytes = b"",
    token: bytes = b"",
    reserved: int = 0,
    server: bool = False,
    salt_version: int | None = None,
) -> bytes:
    """One protected Initial packet, the client's or with ``server=True`` the server's.

    ``key_dcid`` picks the DCID the keys come from (default ``dcid``), ``salt_version`` the
    version whose keys protect it (default ``version``)."""
    keys = initial_keys(
        version if salt_version is None else salt_version,
        dcid if key_dcid is None else key_dcid,
        server=server,
    )
    assert keys is not None
    packet_type = 1 if version == QUIC_V2 else 0
    first = 0xC0 | (packet_type << 4) | (reserved << 2) | (pn_len - 1)
    pn_bytes = (pn & ((1 << (8 * pn_len)) - 1)).to_bytes(pn_len, "big")
    length = pn_len + len(payload) + 16
    header = (
        bytes([first])
        + version.to_bytes(4, "big")
        + bytes([len(dcid)])
        + dcid
        + bytes([len(scid)])
        + scid
        + varint(len(token))
        + token
        + varint(length)
    )
    pn_offset = len(header)
    header += pn_bytes
    nonce = (int.from_bytes(keys.iv, "big") ^ pn).to_bytes(12, "big")
    sealed = AESGCM(keys.key).encrypt(nonce, payload, header)
    sample = sealed[4 - pn_len : 20 - pn_len]
    encryptor = Cipher(algorithms.AES(keys.hp), modes.ECB()).encryptor()
    mask = encryptor.update(sample) + encryptor.finalize()
    packet = bytearray(header + sealed)
    packet[0] ^= mask[0] & 0x0F
    for i in range(pn_len):
        packet[pn_offset + i] ^= mask[1 + i]
    return bytes(packet)


def pad(frames: bytes, size: int = 1162) -> bytes:
    return frames + bytes(max(0, size - len(frames)))


def server_initial(
    payload: bytes, *, version: int = QUIC_V1, key_dcid: bytes = DCID, pn: int = 0, pn_len: int = 4
) -> bytes:
    """A server Initial answering the client's first Initial (keys from its DCID, ``DCID``):
    the server's packets carry the client's SCID (empty here) as DCID and its own as SCID."""
    return protect(
        payload,
        version=version,
        server=True,
        dcid=b"",
        key_dcid=key_dcid,
        scid=A3_SCID,
        pn=pn,
        pn_len=pn_len,
    )


def long_packet(first: int, body: bytes, *, version: int = QUIC_V1, dcid: bytes = b"") -> bytes:
    """An unprotected long-header packet with a Length field (Handshake, 0-RTT): opaque."""
    head = bytes([first]) + version.to_bytes(4, "big") + bytes([len(dcid)]) + dcid
    return head + bytes([len(A3_SCID)]) + A3_SCID + varint(len(body)) + body


def server_hello_msg(cipher: int = 0x1301, *, random: bytes = bytes(32)) -> bytes:
    """A TLS 1.3 ServerHello (or HelloRetryRequest) handshake message: key_share and
    supported_versions extensions."""
    key_share = b"\x00\x33\x00\x24\x00\x1d\x00\x20" + bytes(32)
    versions = b"\x00\x2b\x00\x02\x03\x04"
    exts = key_share + versions
    body = b"\x03\x03" + random + b"\x00" + cipher.to_bytes(2, "big") + b"\x00"
    body += len(exts).to_bytes(2, "big") + exts
    return b"\x02" + len(body).to_bytes(3, "big") + body


def ack_frame() -> bytes:
    return b"\x02" + varint(0) + varint(0) + varint(0) + varint(0)


def events_of(session: QuicSession, *datagrams: tuple[int, bytes]) -> list[object]:
    events: list[object] = []
    for direction, datagram in datagrams:
        events += session.feed(direction, datagram)
    return events


def only_hello(events: list[object]) -> ClientHello:
    assert len(events) == 1 and isinstance(events[0], ClientHello), events
    return events[0]


def only_malformed(events: list[object]) -> Malformed:
    assert len(events) == 1 and isinstance(events[0], Malformed), events
    return events[0]


# --------------------------------------------------------------------------------------------
# RFC sample packets
# --------------------------------------------------------------------------------------------


def test_initial_keys_rfc9001_a1() -> None:
    client = initial_keys(QUIC_V1, DCID)
    server = initial_keys(QUIC_V1, DCID, server=True)
    assert client is not None and server is not None
    assert client.key.hex() == "1f369613dd76d5467730efcbe3b1a22d"
    assert client.iv.hex() == "fa044b2f42a3fd3b46fb255c"
    assert client.hp.hex() == "9f50449e04a0e810283a1e9933adedd2"
    assert server.key.hex() == "cf3a5331653c364c88f0f379b6067e37"
    assert server.iv.hex() == "0ac1493ca1905853b0bba03e"
    assert server.hp.hex() == "c206b8d9b9f0f37644430b490eeaa314"


def test_initial_keys_rfc9369_a1() -> None:
    client = initial_keys(QUIC_V2, DCID)
    assert client is not None
    assert client.key.hex() == "8b1a0bc121284290a29e0971b5cd045d"
    assert client.iv.hex() == "91f73e2351d8fa91660e909f"
    assert client.hp.hex() == "45b95e15235d6f45a6b19cbcb0294ba9"
    assert initial_keys(0x12345678, DCID) is None


def test_protect_helper_reproduces_the_rfc_samples() -> None:
    # The header in A.2 encodes Length in 2 bytes (0x449e) and the packet number 2 in 4.
    for version, sample in ((QUIC_V1, RFC9001_A2_PACKET), (QUIC_V2, RFC9369_A2_PACKET)):
        assert protect(A2_PAYLOAD, version=version, pn=2) == sample


@pytest.mark.parametrize("packet", [RFC9001_A2_PACKET, RFC9369_A2_PACKET], ids=["v1", "v2"])
def test_rfc_sample_client_initial(packet: bytes) -> None:
    assert looks_like_quic_initial(packet)
    session = QuicSession()
    hello = only_hello(session.feed(ORIG, packet))
    assert not session.done  # the ServerHello is still to come
    assert hello.sni == "example.com"
    assert hello.alpn == ("alpn",)
    assert hello.ciphers == (0x1301, 0x1302, 0x1303)[:2]
    assert hello.supported_versions == (0x0304,)
    assert 0x39 in hello.extensions  # quic_transport_parameters (RFC 9001 §8.2)
    # By hand: QUIC, TLS 1.3, SNI, 2 ciphers, 11 extensions (0000 ff01 000a 0010 0005 0033
    # 002b 000d 002d 001c 0039), ALPN "alpn" -> "an".
    assert hello.ja4("q").startswith("q13d0211an_")
    assert session.feed(ORIG, packet) == []  # client datagrams after the hello are not read


def test_protect_helper_reproduces_the_rfc_server_samples() -> None:
    for version, sample in ((QUIC_V1, RFC9001_A3_PACKET), (QUIC_V2, RFC9369_A3_PACKET)):
        assert server_initial(A3_PAYLOAD, version=version, pn=1, pn_len=2) == sample


@pytest.mark.parametrize(
    ("client", "server"),
    [(RFC9001_A2_PACKET, RFC9001_A3_PACKET), (RFC9369_A2_PACKET, RFC9369_A3_PACKET)],
    ids=["v1", "v2"],
)
def test_rfc_sample_server_initial(client: bytes, server: bytes) -> None:
    session = QuicSession()
    only_hello(session.feed(ORIG, client))
    events = session.feed(RESP, server)
    assert len(events) == 1 and isinstance(events[0], ServerHello), events
    hello = events[0]
    assert session.done
    assert hello.cipher == 0x1301 and hello.tls_version() == 0x0304
    assert hello.extensions == (51, 43) and hello.alpn is None and not hello.hello_retry
    assert hello.ja3s_string() == "771,4865,51-43"
    assert session.feed(RESP, server) == []


def test_server_datagram_before_any_client_initial_is_ignored() -> None:
    # A reordered capture: nothing to derive the server's keys from yet.
    session = QuicSession()
    assert session.feed(RESP, RFC9001_A3_PACKET) == []
    assert not session.done
    only_hello(session.feed(ORIG, RFC9001_A2_PACKET))


# --------------------------------------------------------------------------------------------
# Reassembly, coalescing, versions
# --------------------------------------------------------------------------------------------


def test_crypto_split_over_datagrams_out_of_order() -> None:
    # Chrome-style: the ClientHello spread over two Initials in two datagrams, the second half
    # arriving first, each packet also carrying PING and ACK frames.
    hello = A2_CRYPTO_DATA
    first, second = hello[:100], hello[100:]
    ack = b"\x02" + varint(0) + varint(10) + varint(1) + varint(0) + varint(0) + varint(0)
    later = protect(pad(b"\x01" + crypto_frame(150, second[50:]) + crypto_frame(100, second[:50])
                        + ack), pn=1)  # fmt: skip
    earlier = protect(pad(crypto_frame(0, first) + b"\x01"), pn=0)
    session = QuicSession()
    assert session.feed(ORIG, later) == []
    assert not session.done
    parsed = only_hello(session.feed(ORIG, earlier))
    assert parsed.sni == "example.com"


def test_coalesced_packets_in_one_datagram() -> None:
    hello = A2_CRYPTO_DATA
    one = protect(crypto_frame(0, hello[:150]), pn=0, pn_len=1)
    two = protect(pad(crypto_frame(150, hello[150:]), 900), pn=1, pn_len=2)
    junk_zero_rtt = bytes([0xD0]) + QUIC_V1.to_bytes(4, "big") + b"\x08" + DCID + b"\x00"
    junk_zero_rtt += varint(30) + bytes(30)
    datagram = one + two + junk_zero_rtt + b"\x40short-header-1rtt"
    parsed = only_hello(QuicSession().feed(ORIG, datagram))
    assert parsed.sni == "example.com"


def test_duplicate_crypto_data_is_harmless() -> None:
    hello = A2_CRYPTO_DATA
    session = QuicSession()
    part = protect(pad(crypto_frame(0, hello[:120])), pn=0)
    assert session.feed(ORIG, part) == []
    assert session.feed(ORIG, protect(pad(crypto_frame(0, hello[:120])), pn=1)) == []
    only_hello(session.feed(ORIG, protect(pad(crypto_frame(60, hello[60:])), pn=2)))


def test_draft29_initial() -> None:
    packet = protect(A2_PAYLOAD, version=DRAFT_29, pn=2)
    assert looks_like_quic_initial(packet)
    assert only_hello(QuicSession().feed(ORIG, packet)).sni == "example.com"


def test_keys_stay_with_the_first_dcid() -> None:
    # After the server answers, the client's later Initials carry the server's connection ID
    # as DCID, but the keys still come from the first DCID (RFC 9001 §5.2).
    hello = A2_CRYPTO_DATA
    session = QuicSession()
    assert session.feed(ORIG, protect(pad(crypto_frame(0, hello[:90])))) == []
    second = protect(pad(crypto_frame(90, hello[90:])), dcid=b"\x11" * 5, key_dcid=DCID, pn=1)
    only_hello(session.feed(ORIG, second))


def test_new_keys_after_retry() -> None:
    hello = A2_CRYPTO_DATA
    session = QuicSession()
    assert session.feed(ORIG, protect(pad(crypto_frame(0, hello[:90])))) == []
    # After a Retry, the client restarts with the Retry's SCID as DCID and keys from it.
    retry_dcid = b"\x22" * 8
    only_hello(session.feed(ORIG, protect(A2_PAYLOAD, dcid=retry_dcid, pn=1)))


def test_token_and_scid_are_skipped() -> None:
    packet = protect(A2_PAYLOAD, scid=b"\x01\x02\x03", token=b"retry-token" * 3)
    only_hello(QuicSession().feed(ORIG, packet))


# --------------------------------------------------------------------------------------------
# Malformed and non-QUIC input
# --------------------------------------------------------------------------------------------


def test_tampered_packet_fails_authentication() -> None:
    packet = bytearray(RFC9001_A2_PACKET)
    packet[600] ^= 0x01
    bad = only_malformed(QuicSession().feed(ORIG, bytes(packet)))
    assert "decrypt" in bad.reason and bad.offset == 0


def test_forbidden_frame_in_initial() -> None:
    stream_frame = b"\x08\x00\x05hello"  # STREAM frames are 1-RTT only (RFC 9000 §12.4)
    bad = only_malformed(QuicSession().feed(ORIG, protect(pad(stream_frame))))
    assert "0x08" in bad.reason


def test_reserved_bits_set() -> None:
    bad = only_malformed(QuicSession().feed(ORIG, protect(A2_PAYLOAD, reserved=1)))
    assert "reserved" in bad.reason


def test_crypto_beyond_limit() -> None:
    bad = only_malformed(QuicSession().feed(ORIG, protect(pad(crypto_frame(MAX_CRYPTO, b"x")))))
    assert "exceeds" in bad.reason


def test_crypto_stream_must_start_with_client_hello() -> None:
    server_hello_first = protect(pad(crypto_frame(0, b"\x02\x00\x00\x00")))
    bad = only_malformed(QuicSession().feed(ORIG, server_hello_first))
    assert "handshake type 2" in bad.reason


def test_truncated_datagram() -> None:
    session = QuicSession()
    bad = only_malformed(session.feed(ORIG, RFC9001_A2_PACKET[:600]))
    assert "truncated" in bad.reason and session.done


def test_unknown_version() -> None:
    packet = bytearray(RFC9001_A2_PACKET)
    packet[1:5] = b"\x0a\x1a\x2a\x3b"  # not 0x?a?a?a?a, which is reserved (RFC 9000 §15)
    assert not looks_like_quic_initial(bytes(packet))
    assert "unsupported" in only_malformed(QuicSession().feed(ORIG, bytes(packet))).reason


def test_looks_like_quic_initial_rejects() -> None:
    assert not looks_like_quic_initial(RFC9001_A2_PACKET[:1199])  # not padded to 1200
    assert not looks_like_quic_initial(b"\x40" + RFC9001_A2_PACKET[1:])  # short header
    handshake_type = bytes([RFC9001_A2_PACKET[0] | 0x20]) + RFC9001_A2_PACKET[1:]
    assert not looks_like_quic_initial(handshake_type)
    short_dcid = RFC9001_A2_PACKET[:5] + b"\x04" + RFC9001_A2_PACKET[6:]
    assert not looks_like_quic_initial(short_dcid)
    assert not looks_like_quic_initial(b"")


def test_joining_mid_connection_gives_up() -> None:
    session = QuicSession()
    bad = only_malformed(session.feed(ORIG, b"\x41" + bytes(60)))  # a 1-RTT short header
    assert "no long header" in bad.reason and session.done


def test_zero_rtt_ahead_of_the_initial() -> None:
    # nDPI's quic_0RTT.pcap: the client's 0-RTT datagrams were captured before its Initial.
    zero_rtt = long_packet(0xD0, bytes(60), dcid=DCID)
    session = QuicSession()
    assert session.feed(ORIG, zero_rtt) == [] and not session.done
    assert session.feed(ORIG, zero_rtt) == []
    assert only_hello(session.feed(ORIG, RFC9001_A2_PACKET)).sni == "example.com"


def test_unknown_direction_is_an_api_error() -> None:
    with pytest.raises(ValueError, match="direction"):
        QuicSession().feed(7, RFC9001_A2_PACKET)


# --------------------------------------------------------------------------------------------
# The server's side
# --------------------------------------------------------------------------------------------


def test_server_initial_coalesced_with_handshake_and_1rtt() -> None:
    # A server's first datagram: Initial (ACK + ServerHello), then a Handshake packet
    # (EncryptedExtensions, Certificate...: unreadable without the key exchange), then 1-RTT.
    initial = server_initial(ack_frame() + crypto_frame(0, server_hello_msg()))
    handshake = long_packet(0xE0, bytes(range(256)) * 3)
    session = QuicSession()
    only_hello(session.feed(ORIG, RFC9001_A2_PACKET))
    events = session.feed(RESP, initial + handshake + b"\x40" + bytes(40))
    assert [type(e) for e in events] == [ServerHello] and session.done


def test_handshake_packet_first_is_skipped() -> None:
    handshake = long_packet(0xE0, bytes(100))
    initial = server_initial(crypto_frame(0, server_hello_msg(0x1302)))
    session = QuicSession()
    only_hello(session.feed(ORIG, RFC9001_A2_PACKET))
    (hello,) = session.feed(RESP, handshake + initial)
    assert isinstance(hello, ServerHello) and hello.cipher == 0x1302


def test_server_hello_split_over_datagrams_out_of_order() -> None:
    # A ServerHello with a post-quantum key share (X25519MLKEM768, 0x11ec: 1120 bytes) spans
    # two server Initials, which arrive in the wrong order.
    exts = b"\x00\x33" + (4 + 1120).to_bytes(2, "big") + b"\x11\xec" + (1120).to_bytes(2, "big")
    exts += bytes(1120) + b"\x00\x2b\x00\x02\x03\x04"
    body = bytearray(b"\x03\x03" + bytes(32) + b"\x00\x13\x01\x00")
    body += len(exts).to_bytes(2, "big") + exts
    message = b"\x02" + len(body).to_bytes(3, "big") + bytes(body)
    first = server_initial(ack_frame() + crypto_frame(0, message[:700]), pn=0)
    second = server_initial(crypto_frame(700, message[700:]), pn=1)
    session = QuicSession()
    only_hello(session.feed(ORIG, RFC9001_A2_PACKET))
    assert session.feed(RESP, second) == []
    (hello,) = session.feed(RESP, first)
    assert isinstance(hello, ServerHello) and hello.extensions == (51, 43) and session.done


def test_client_hello_still_incomplete_when_the_server_answers() -> None:
    # The server's Initial may be read before the rest of the client's.
    hello = A2_CRYPTO_DATA
    session = QuicSession()
    assert session.feed(ORIG, protect(pad(crypto_frame(0, hello[:100])))) == []
    (server,) = session.feed(RESP, server_initial(crypto_frame(0, server_hello_msg())))
    assert isinstance(server, ServerHello) and not session.done
    only_hello(session.feed(ORIG, protect(pad(crypto_frame(100, hello[100:])), pn=1)))
    assert session.done


def test_gives_up_after_quiet_server_datagrams() -> None:
    session = QuicSession()
    only_hello(session.feed(ORIG, RFC9001_A2_PACKET))
    for i in range(MAX_QUIET_SERVER_DATAGRAMS):
        assert not session.done
        handshake_only = long_packet(0xE0, bytes(50)) + b"\x41" + bytes(30)
        assert session.feed(RESP, handshake_only if i % 2 else b"\x41" + bytes(30)) == []
    assert session.done


def test_quiet_server_datagrams_wait_for_the_client_hello() -> None:
    hello = A2_CRYPTO_DATA
    session = QuicSession()
    assert session.feed(ORIG, protect(pad(crypto_frame(0, hello[:100])))) == []
    for _ in range(MAX_QUIET_SERVER_DATAGRAMS):
        assert session.feed(RESP, b"\x41" + bytes(30)) == []
    assert not session.done
    only_hello(session.feed(ORIG, protect(pad(crypto_frame(100, hello[100:])), pn=1)))
    assert session.done


def test_server_keys_follow_a_retry() -> None:
    # Client Initial, server Retry with a new SCID, the client's Initial again (to the new
    # DCID), then the server's Initial: both sides' keys now come from the Retry's SCID.
    retry_scid = bytes.fromhex("7163a9c8b3ee0d41")
    retry = bytes([0xF0]) + QUIC_V1.to_bytes(4, "big") + b"\x00" + b"\x08" + retry_scid
    retry += b"retry-token" + bytes(16)  # token, integrity tag
    session = QuicSession()
    only_hello(session.feed(ORIG, RFC9001_A2_PACKET))
    assert session.feed(RESP, retry) == []
    assert session.feed(ORIG, protect(A2_PAYLOAD, dcid=retry_scid, token=b"retry-token")) == []
    sh = server_initial(crypto_frame(0, server_hello_msg()), key_dcid=retry_scid)
    (hello,) = session.feed(RESP, sh)
    assert isinstance(hello, ServerHello) and session.done


def test_hello_retry_request_then_second_client_hello() -> None:
    # RFC 8446 §4.1.4 over QUIC: the HelloRetryRequest and the real ServerHello follow each
    # other in the server's CRYPTO stream, the two ClientHellos in the client's; the client's
    # later Initials carry the server's connection ID but keep the first DCID's keys.
    hrr = server_hello_msg(random=HELLO_RETRY_RANDOM)
    second_ch = A2_CRYPTO_DATA  # the same bytes again, as a second message
    session = QuicSession()
    first = events_of(
        session,
        (ORIG, RFC9001_A2_PACKET),
        (RESP, server_initial(ack_frame() + crypto_frame(0, hrr), pn=0)),
    )
    assert [type(e) for e in first] == [ClientHello, ServerHello]
    assert isinstance(first[1], ServerHello) and first[1].hello_retry and not session.done
    again = protect(pad(crypto_frame(len(A2_CRYPTO_DATA), second_ch)), dcid=A3_SCID,
                    key_dcid=DCID, pn=3)  # fmt: skip
    assert [type(e) for e in session.feed(ORIG, again)] == [ClientHello]
    real = server_initial(crypto_frame(len(hrr), server_hello_msg(0x1303)), pn=1)
    (hello,) = session.feed(RESP, real)
    assert isinstance(hello, ServerHello) and hello.cipher == 0x1303 and not hello.hello_retry
    assert session.done


def test_server_version_may_differ_from_the_clients() -> None:
    # Compatible version negotiation (RFC 9368): the client offers v1, the server answers in
    # v2, with v2's keys from the client's DCID.
    session = QuicSession()
    only_hello(session.feed(ORIG, RFC9001_A2_PACKET))
    (hello,) = session.feed(RESP, RFC9369_A3_PACKET)
    assert isinstance(hello, ServerHello)


def test_server_initial_that_does_not_decrypt() -> None:
    packet = bytearray(RFC9001_A3_PACKET)
    packet[60] ^= 0x40
    session = QuicSession()
    only_hello(session.feed(ORIG, RFC9001_A2_PACKET))
    assert session.feed(RESP, b"\x41" + bytes(99)) == []  # 100 server bytes before it
    bad = only_malformed(session.feed(RESP, bytes(packet)))
    assert bad.direction == RESP and bad.offset == 100 and "decrypt" in bad.reason
    assert session.done


def test_server_crypto_stream_must_start_with_server_hello() -> None:
    session = QuicSession()
    only_hello(session.feed(ORIG, RFC9001_A2_PACKET))
    bad = only_malformed(session.feed(RESP, server_initial(crypto_frame(0, A2_CRYPTO_DATA))))
    assert bad.direction == RESP and "handshake type 1" in bad.reason


def test_bad_server_hello_body() -> None:
    session = QuicSession()
    only_hello(session.feed(ORIG, RFC9001_A2_PACKET))
    broken = b"\x02\x00\x00\x05\x03\x03\x00\x00\x00"
    bad = only_malformed(session.feed(RESP, server_initial(crypto_frame(0, broken))))
    assert bad.direction == RESP and bad.reason.startswith("ServerHello:")


# --------------------------------------------------------------------------------------------
# Version negotiation and reserved versions
# --------------------------------------------------------------------------------------------


def version_negotiation(*versions: int) -> bytes:
    # RFC 9000 §17.2.1: the server echoes the client's connection IDs, swapped.
    head = b"\x80" + bytes(4) + b"\x00" + bytes([len(DCID)]) + DCID
    return head + b"".join(v.to_bytes(4, "big") for v in versions)


def test_reserved_version_probe_then_version_negotiation() -> None:
    # A client probing with a reserved version (protected with v1's keys, as the ones seen
    # do), the server's Version Negotiation, then the client's real v1 Initial with a new DCID
    # and another ClientHello: both hellos are reported, then the server's.
    probe = protect(A2_PAYLOAD, version=RESERVED_VERSION, salt_version=QUIC_V1)
    assert looks_like_quic_initial(probe)
    new_dcid = b"\x33" * 8
    second = A2_PAYLOAD.replace(b"example.com", b"example.org")
    session = QuicSession()
    events = events_of(
        session,
        (ORIG, probe),
        (RESP, version_negotiation(QUIC_V1, QUIC_V2)),
        (ORIG, protect(second, dcid=new_dcid)),
        (RESP, protect(crypto_frame(0, server_hello_msg()), server=True, dcid=b"",
                       key_dcid=new_dcid, scid=A3_SCID)),
    )  # fmt: skip
    assert [type(e) for e in events] == [ClientHello, ClientHello, ServerHello]
    assert [e.sni for e in events[:2] if isinstance(e, ClientHello)] == [
        "example.com",
        "example.org",
    ]
    assert session.done


def test_version_negotiation_listing_the_clients_version_is_ignored() -> None:
    session = QuicSession()
    only_hello(session.feed(ORIG, RFC9001_A2_PACKET))
    assert session.feed(RESP, version_negotiation(QUIC_V2, QUIC_V1)) == []
    # Still expecting the ServerHello keyed by the first DCID; no second ClientHello read.
    assert session.feed(ORIG, RFC9001_A2_PACKET) == []
    assert isinstance(session.feed(RESP, RFC9001_A3_PACKET)[0], ServerHello)


def test_reserved_version_with_draft29_keys() -> None:
    probe = protect(A2_PAYLOAD, version=0xFAFAFAFA, salt_version=DRAFT_29)
    assert only_hello(QuicSession().feed(ORIG, probe)).sni == "example.com"


def test_reserved_version_that_does_not_open_is_skipped() -> None:
    # What a probe holds is the client's choice: no Malformed, wait for the real Initial.
    probe = protect(A2_PAYLOAD, version=RESERVED_VERSION, salt_version=QUIC_V2)
    session = QuicSession()
    assert session.feed(ORIG, probe) == []
    assert not session.done
    only_hello(session.feed(ORIG, RFC9001_A2_PACKET))


# --------------------------------------------------------------------------------------------
# Non-IETF versions with IETF-style Initials
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [QUIC_MVFST_D22, QUIC_MVFST_D27])
def test_mvfst_versions(version: int) -> None:
    packet = protect(A2_PAYLOAD, version=version)
    assert looks_like_quic_initial(packet)
    session = QuicSession()
    assert only_hello(session.feed(ORIG, packet)).sni == "example.com"
    (hello,) = session.feed(RESP, server_initial(A3_PAYLOAD, version=version))
    assert isinstance(hello, ServerHello) and session.done


def test_mvfst_salts_are_drafts_22_and_23() -> None:
    # mvfst's 0xfaceb002 is its draft-27 version, which uses draft 23's salt.
    d27 = initial_keys(QUIC_MVFST_D27, DCID)
    assert d27 is not None and d27 == initial_keys(0xFF00001B, DCID)
    assert initial_keys(QUIC_MVFST_D22, DCID) not in (d27, initial_keys(QUIC_V1, DCID))


def gquic_crypto(offset: int, data: bytes) -> bytes:
    return b"\x08" + varint(offset) + varint(len(data)) + data


@pytest.mark.parametrize("version", [QUIC_T050, QUIC_T051])
def test_google_t05x(version: int) -> None:
    # T050/T051 keep Google QUIC's frame types: CRYPTO is 0x08, PING 0x07, ACK 0b01xxxxxx, and
    # PADDING (0x00) runs to the end of the packet.
    client = protect(pad(gquic_crypto(0, A2_CRYPTO_DATA)), version=version)
    assert looks_like_quic_initial(client)
    # ACK with 2-byte Largest Acked, 1-byte blocks, 2 extra blocks, 2 timestamps.
    ack = bytes([0x40 | 0x20 | 0x04]) + b"\x00\x05" + b"\x00\x00" + b"\x02" + b"\x01"
    ack += b"\x01\x01" + b"\x01\x01" + b"\x02" + b"\x01\x00\x00\x00\x10" + b"\x01\x00\x20"
    simple_ack = b"\x40\x01\x00\x00\x01\x00"  # as Google's servers send it
    message = server_hello_msg()
    server_first = server_initial(
        simple_ack + b"\x07" + gquic_crypto(0, message[:50]), version=version, pn=0
    )
    server_second = server_initial(ack + gquic_crypto(50, message[50:]), version=version, pn=1)
    session = QuicSession()
    assert only_hello(session.feed(ORIG, client)).sni == "example.com"
    assert session.feed(RESP, server_first) == []
    (hello,) = session.feed(RESP, server_second)
    assert isinstance(hello, ServerHello) and session.done


def test_google_t05x_unknown_frame_ends_the_packet_quietly() -> None:
    # A gQUIC frame type we do not parse: keep the CRYPTO data before it, skip the rest.
    client = protect(pad(gquic_crypto(0, A2_CRYPTO_DATA) + b"\x05" + b"junk"), version=QUIC_T051)
    assert only_hello(QuicSession().feed(ORIG, client)).sni == "example.com"


def test_google_t05x_truncated_ack() -> None:
    client = protect(b"\x60\x01", version=QUIC_T050)  # ACK with blocks, cut short
    assert "truncated" in only_malformed(QuicSession().feed(ORIG, client)).reason
