//! dist-distill
