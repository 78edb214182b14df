//! fid
