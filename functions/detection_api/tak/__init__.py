"""Delivery to TAK servers: the client (transport, stream, confirmation) and the forwarder."""
