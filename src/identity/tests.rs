//! Unit tests of the identity provider with forged tokens.
