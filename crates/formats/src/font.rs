//! The TrueType font plots draw their text with: DejaVu Sans Mono (Bitstream Vera license,
//! `assets/fonts/LICENSE-DejaVu.txt`), embedded so a plot looks the same on every machine and
//! needs no system font.

/// DejaVu Sans Mono, TrueType bytes (register it with plotters' `register_font`).
pub static DEJAVU_SANS_MONO: &[u8] = include_bytes!("../assets/fonts/DejaVuSansMono.ttf");

#[cfg(test)]
mod tests {
    #[test]
    fn is_a_truetype_font() {
        // TrueType outlines start with the version 1.0 tag; the file holds a `glyf` table.
        let f = super::DEJAVU_SANS_MONO;
        assert_eq!(&f[..4], &[0, 1, 0, 0]);
        assert!(f.windows(4).any(|w| w == b"glyf"));
    }
}
