//! icl-probe
