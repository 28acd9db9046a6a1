"""Python bindings of diaspora-rs, the Diaspora Stream API in Rust.

The API lives in :mod:`diaspora_stream.api` (same names and keywords as upstream's
``diaspora_stream.api``)."""
