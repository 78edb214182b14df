//! edm-core
