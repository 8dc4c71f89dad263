//! A [`Snapshot`] drawn as a PNG: a monospace font found on the system,
//! glyphs rasterized with `fontdue`, the image encoded with `png`.
//!
//! Each cell is `cell_width` x `cell_height` pixels (the font's advance
//! and line height at the size asked for). Colors: the 16 ANSI colors as
//! xterm draws them, the 6x6x6 cube and the 24 grays of the 256-color
//! palette, true color as given; the default foreground is light gray on
//! a black default background. A bold cell uses the bold face if one was
//! found (the regular one otherwise); inverse swaps the cell's colors;
//! underline is a line under the glyphs; italic is drawn upright. The
//! cursor, when the program shows it, is a block: its cell inverted.

use crate::snapshot::{Attrs, Color, Snapshot};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The default foreground and background.
pub const DEFAULT_FG: [u8; 3] = [229, 229, 229];
pub const DEFAULT_BG: [u8; 3] = [0, 0, 0];

/// xterm's 16 ANSI colors.
const ANSI: [[u8; 3]; 16] = [
    [0, 0, 0],
    [205, 0, 0],
    [0, 205, 0],
    [205, 205, 0],
    [0, 0, 238],
    [205, 0, 205],
    [0, 205, 205],
    [229, 229, 229],
    [127, 127, 127],
    [255, 0, 0],
    [0, 255, 0],
    [255, 255, 0],
    [92, 92, 255],
    [255, 0, 255],
    [0, 255, 255],
    [255, 255, 255],
];

/// Font files larger than this are not read.
const MAX_FONT_BYTES: u64 = 64 << 20;

/// Where a monospace font is looked for when none is configured, regular
/// then bold, in order: Debian/Ubuntu, Arch, Fedora, then Liberation and
/// Noto in the same places.
pub const KNOWN_FONTS: &[(&str, &str)] = &[
    (
        "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf",
        "/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf",
    ),
    (
        "/usr/share/fonts/TTF/DejaVuSansMono.ttf",
        "/usr/share/fonts/TTF/DejaVuSansMono-Bold.ttf",
    ),
    (
        "/usr/share/fonts/dejavu-sans-mono-fonts/DejaVuSansMono.ttf",
        "/usr/share/fonts/dejavu-sans-mono-fonts/DejaVuSansMono-Bold.ttf",
    ),
    (
        "/usr/share/fonts/dejavu/DejaVuSansMono.ttf",
        "/usr/share/fonts/dejavu/DejaVuSansMono-Bold.ttf",
    ),
    (
        "/usr/share/fonts/truetype/liberation/LiberationMono-Regular.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationMono-Bold.ttf",
    ),
    (
        "/usr/share/fonts/liberation-mono/LiberationMono-Regular.ttf",
        "/usr/share/fonts/liberation-mono/LiberationMono-Bold.ttf",
    ),
    (
        "/usr/share/fonts/truetype/noto/NotoSansMono-Regular.ttf",
        "/usr/share/fonts/truetype/noto/NotoSansMono-Bold.ttf",
    ),
    (
        "/usr/share/fonts/noto/NotoSansMono-Regular.ttf",
        "/usr/share/fonts/noto/NotoSansMono-Bold.ttf",
    ),
];

/// Why there is no picture.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error(
        "no monospace font found; searched {}. Install one (Debian/Ubuntu: apt-get install fonts-dejavu-core; Fedora: dnf install dejavu-sans-mono-fonts; Arch: pacman -S ttf-dejavu) or set [screenshot] font = \"/path/to/Mono.ttf\" in the config",
        .searched.join(", ")
    )]
    NoFont { searched: Vec<String> },
    #[error("font {path}: {why}; set [screenshot] font to a TrueType or OpenType file")]
    BadFont { path: String, why: String },
    #[error(
        "the picture would be {width}x{height} pixels, more than the {max} allowed ([screenshot] max_pixels): ask for format \"text\", or use a smaller font_px"
    )]
    TooLarge { width: u64, height: u64, max: u64 },
    #[error("failed to encode the PNG: {0}")]
    Encode(String),
}

/// A loaded regular face (and bold, if found) at one pixel size, with the
/// cell size they give.
pub struct Fonts {
    regular: fontdue::Font,
    bold: Option<fontdue::Font>,
    pub regular_path: PathBuf,
    pub bold_path: Option<PathBuf>,
    /// The regular face's own name (`DejaVu Sans Mono`), if it has one.
    pub name: Option<String>,
    pub px: f32,
    pub cell_width: u32,
    pub cell_height: u32,
    /// Pixels from a cell's top to the glyphs' baseline.
    baseline: i32,
}

impl std::fmt::Debug for Fonts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fonts")
            .field("regular_path", &self.regular_path)
            .field("bold_path", &self.bold_path)
            .field("px", &self.px)
            .field("cell", &(self.cell_width, self.cell_height))
            .finish()
    }
}

fn load_face(path: &Path) -> Result<fontdue::Font, RenderError> {
    let bad = |why: String| RenderError::BadFont {
        path: path.display().to_string(),
        why,
    };
    let meta = std::fs::metadata(path).map_err(|e| bad(format!("cannot read it ({e})")))?;
    if !meta.is_file() {
        return Err(bad("not a file".into()));
    }
    if meta.len() > MAX_FONT_BYTES {
        return Err(bad(format!(
            "{} bytes, more than a font file may be ({MAX_FONT_BYTES})",
            meta.len()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read it ({e})")))?;
    fontdue::Font::from_bytes(bytes, fontdue::FontSettings::default())
        .map_err(|e| bad(format!("not a font fontdue can read ({e})")))
}

impl Fonts {
    /// Loads the faces and measures a cell at `px` pixels.
    pub fn load(regular: &Path, bold: Option<&Path>, px: f32) -> Result<Fonts, RenderError> {
        let face = load_face(regular)?;
        let bad = |why: &str| RenderError::BadFont {
            path: regular.display().to_string(),
            why: why.into(),
        };
        let line = face
            .horizontal_line_metrics(px)
            .ok_or_else(|| bad("it has no horizontal metrics"))?;
        if !face.has_glyph('M') {
            return Err(bad("it has no glyph for M: not a Latin monospace font"));
        }
        let advance = face.metrics('M', px).advance_width;
        let cell_width = advance.round().max(1.0) as u32;
        let cell_height = (line.ascent - line.descent + line.line_gap).ceil().max(1.0) as u32;
        let baseline = line.ascent.round() as i32;
        // A bold face that cannot be read is left out: bold cells then use
        // the regular face.
        let bold_face = bold.and_then(|p| load_face(p).ok().map(|f| (p.to_path_buf(), f)));
        Ok(Fonts {
            name: face.name().map(str::to_string),
            regular: face,
            bold_path: bold_face.as_ref().map(|(p, _)| p.clone()),
            bold: bold_face.map(|(_, f)| f),
            regular_path: regular.to_path_buf(),
            px,
            cell_width,
            cell_height,
            baseline,
        })
    }

    fn face(&self, bold: bool, c: char) -> &fontdue::Font {
        match &self.bold {
            Some(b) if bold && b.has_glyph(c) => b,
            _ => &self.regular,
        }
    }
}

/// Where the fonts are: `configured` (with `configured_bold`) if given,
/// else the first of [`KNOWN_FONTS`] that exists, else what `fc-match`
/// says for `monospace` (if fontconfig is installed). Returns the regular
/// and (if found) bold face, or every place searched.
pub fn find_fonts(
    configured: Option<&Path>,
    configured_bold: Option<&Path>,
) -> Result<(PathBuf, Option<PathBuf>), RenderError> {
    if let Some(p) = configured {
        return Ok((p.to_path_buf(), configured_bold.map(Path::to_path_buf)));
    }
    let mut searched: Vec<String> = Vec::new();
    for (regular, bold) in KNOWN_FONTS {
        if Path::new(regular).is_file() {
            let bold = Path::new(bold).is_file().then(|| PathBuf::from(bold));
            return Ok((PathBuf::from(regular), bold));
        }
        searched.push((*regular).to_string());
    }
    match fc_match("monospace") {
        Some(regular) => {
            let bold = fc_match("monospace:bold").filter(|b| *b != regular);
            Ok((regular, bold))
        }
        None => {
            searched.push(if which("fc-match").is_some() {
                "fc-match monospace (found none)".into()
            } else {
                "fc-match monospace (fontconfig is not installed)".into()
            });
            Err(RenderError::NoFont { searched })
        }
    }
}

/// `program` on `PATH`, if there.
fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

/// The file fontconfig picks for `pattern`, if fontconfig is installed
/// and answers within 5 s with a file that exists.
fn fc_match(pattern: &str) -> Option<PathBuf> {
    let program = which("fc-match")?;
    let mut child = Command::new(program)
        .args(["-f", "%{file}", pattern])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let out = child.wait_with_output().ok()?;
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    path.is_file().then_some(path)
}

/// The RGB a color stands for; `default` for [`Color::Default`].
pub fn rgb(c: Color, default: [u8; 3]) -> [u8; 3] {
    match c {
        Color::Default => default,
        Color::Rgb(r, g, b) => [r, g, b],
        Color::Index(i @ 0..=15) => ANSI[i as usize],
        Color::Index(i @ 16..=231) => {
            let level = |v: u8| if v == 0 { 0 } else { 55 + 40 * v };
            let i = i - 16;
            [level(i / 36), level((i / 6) % 6), level(i % 6)]
        }
        Color::Index(i) => {
            let v = 8 + 10 * (i - 232);
            [v, v, v]
        }
    }
}

/// The colors a cell is drawn in: (foreground, background).
pub fn cell_colors(a: &Attrs, cursor: bool) -> ([u8; 3], [u8; 3]) {
    let (fg, bg) = (rgb(a.fg, DEFAULT_FG), rgb(a.bg, DEFAULT_BG));
    if a.inverse != cursor {
        (bg, fg)
    } else {
        (fg, bg)
    }
}

/// An encoded picture.
#[derive(Debug, Clone)]
pub struct Png {
    pub data: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

struct Canvas {
    px: Vec<u8>,
    width: usize,
}

impl Canvas {
    fn fill(&mut self, x: usize, y: usize, w: usize, h: usize, c: [u8; 3]) {
        for row in y..y + h {
            let start = (row * self.width + x) * 3;
            for p in self.px[start..start + w * 3].chunks_exact_mut(3) {
                p.copy_from_slice(&c);
            }
        }
    }

    /// Draws a coverage bitmap in `fg` at (`x`, `y`), clipped to `clip`
    /// (x0, y0, x1, y1).
    fn blend(
        &mut self,
        glyph: &(fontdue::Metrics, Vec<u8>),
        x: i64,
        y: i64,
        clip: (i64, i64, i64, i64),
        fg: [u8; 3],
    ) {
        let (m, cover) = glyph;
        for gy in 0..m.height as i64 {
            let py = y + gy;
            if py < clip.1 || py >= clip.3 {
                continue;
            }
            for gx in 0..m.width as i64 {
                let px = x + gx;
                if px < clip.0 || px >= clip.2 {
                    continue;
                }
                let a = u32::from(cover[(gy as usize) * m.width + gx as usize]);
                if a == 0 {
                    continue;
                }
                let i = ((py as usize) * self.width + px as usize) * 3;
                for (p, top) in self.px[i..i + 3].iter_mut().zip(fg) {
                    let (base, top) = (u32::from(*p), u32::from(top));
                    *p = ((base * (255 - a) + top * a + 127) / 255) as u8;
                }
            }
        }
    }
}

/// Draws `shot` with `fonts` and encodes it; refuses a picture of more
/// than `max_pixels` pixels.
pub fn render(shot: &Snapshot, fonts: &Fonts, max_pixels: u64) -> Result<Png, RenderError> {
    let (cw, ch) = (fonts.cell_width as usize, fonts.cell_height as usize);
    let (width, height) = (
        u64::from(shot.cols) * cw as u64,
        u64::from(shot.rows) * ch as u64,
    );
    if width * height > max_pixels || width > u64::from(u32::MAX) || height > u64::from(u32::MAX) {
        return Err(RenderError::TooLarge {
            width,
            height,
            max: max_pixels,
        });
    }
    let mut canvas = Canvas {
        px: vec![0; (width * height * 3) as usize],
        width: width as usize,
    };
    let mut glyphs: HashMap<(char, bool), (fontdue::Metrics, Vec<u8>)> = HashMap::new();
    let thickness = ((fonts.px / 14.0).round() as usize).max(1);
    let underline_y =
        (fonts.baseline.max(0) as usize + thickness).min(ch.saturating_sub(thickness));
    let cursor = shot.cursor;
    for (r, row) in shot.cells.iter().enumerate() {
        for (c, cell) in row.iter().enumerate() {
            if cell.wide_continuation && c > 0 {
                continue;
            }
            let span = if cell.wide { 2 } else { 1 }.min(row.len() - c);
            let on_cursor = cursor.visible
                && usize::from(cursor.row) == r
                && (c..c + span).contains(&usize::from(cursor.col));
            let (fg, bg) = cell_colors(&cell.attrs, on_cursor);
            let (x0, y0) = (c * cw, r * ch);
            canvas.fill(x0, y0, span * cw, ch, bg);
            let clip = (
                x0 as i64,
                y0 as i64,
                (x0 + span * cw) as i64,
                (y0 + ch) as i64,
            );
            for ch_ in cell.text.chars() {
                let bold = cell.attrs.bold;
                let glyph = glyphs
                    .entry((ch_, bold))
                    .or_insert_with(|| fonts.face(bold, ch_).rasterize(ch_, fonts.px));
                let m = glyph.0;
                let gx = x0 as i64 + i64::from(m.xmin);
                let gy =
                    y0 as i64 + i64::from(fonts.baseline) - m.height as i64 - i64::from(m.ymin);
                canvas.blend(glyph, gx, gy, clip, fg);
            }
            if cell.attrs.underline {
                canvas.fill(x0, y0 + underline_y, span * cw, thickness, fg);
            }
        }
    }
    let mut data = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut data, width as u32, height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Fast);
        let mut w = enc
            .write_header()
            .map_err(|e| RenderError::Encode(e.to_string()))?;
        w.write_image_data(&canvas.px)
            .map_err(|e| RenderError::Encode(e.to_string()))?;
        w.finish().map_err(|e| RenderError::Encode(e.to_string()))?;
    }
    Ok(Png {
        data,
        width: width as u32,
        height: height as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The system's monospace font (`scripts/test.sh` installs DejaVu).
    fn fonts() -> Fonts {
        let (r, b) = find_fonts(None, None)
            .unwrap_or_else(|e| panic!("{e} (scripts/test.sh installs fonts-dejavu-core)"));
        Fonts::load(&r, b.as_deref(), 16.0).unwrap()
    }

    fn shot(rows: u16, cols: u16, bytes: &[u8]) -> Snapshot {
        let mut p = vt100::Parser::new(
            std::num::NonZeroU16::new(rows).unwrap(),
            std::num::NonZeroU16::new(cols).unwrap(),
            0,
        );
        p.process(bytes);
        Snapshot::from_vt100(p.screen())
    }

    /// Decodes a PNG into RGB rows.
    fn decode(png_bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let dec = png::Decoder::new(std::io::Cursor::new(png_bytes));
        let mut reader = dec.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        (info.width, info.height, buf)
    }

    #[test]
    fn fontconfig_is_asked_when_it_is_installed() {
        if which("fc-match").is_none() {
            assert_eq!(fc_match("monospace"), None);
            return;
        }
        let found = fc_match("monospace").expect("fc-match names a monospace font");
        assert!(found.is_file(), "{found:?}");
        Fonts::load(&found, None, 12.0).unwrap();
        // A configured font is taken as given, found or not: loading it
        // says what is wrong.
        let (r, b) = find_fonts(Some(Path::new("/no/such.ttf")), None).unwrap();
        assert_eq!((r, b), (PathBuf::from("/no/such.ttf"), None));
    }

    #[test]
    fn the_palette_is_xterms() {
        assert_eq!(rgb(Color::Index(1), DEFAULT_FG), [205, 0, 0]);
        assert_eq!(rgb(Color::Index(16), DEFAULT_FG), [0, 0, 0]);
        assert_eq!(rgb(Color::Index(196), DEFAULT_FG), [255, 0, 0]);
        assert_eq!(rgb(Color::Index(21), DEFAULT_FG), [0, 0, 255]);
        assert_eq!(rgb(Color::Index(231), DEFAULT_FG), [255, 255, 255]);
        assert_eq!(rgb(Color::Index(232), DEFAULT_FG), [8, 8, 8]);
        assert_eq!(rgb(Color::Index(255), DEFAULT_FG), [238, 238, 238]);
        assert_eq!(rgb(Color::Rgb(1, 2, 3), DEFAULT_FG), [1, 2, 3]);
        assert_eq!(rgb(Color::Default, DEFAULT_BG), DEFAULT_BG);
        let inv = Attrs {
            fg: Color::Index(2),
            inverse: true,
            ..Attrs::default()
        };
        assert_eq!(cell_colors(&inv, false), (DEFAULT_BG, [0, 205, 0]));
        // The cursor on an inverse cell shows it as it would be without.
        assert_eq!(cell_colors(&inv, true), ([0, 205, 0], DEFAULT_BG));
    }

    #[test]
    fn cells_are_drawn_in_their_colors_at_the_font_cell_size() {
        let f = fonts();
        assert!(f.cell_width >= 6 && f.cell_height >= 12, "{f:?}");
        let s = shot(2, 6, b"\x1b[1;31mRED\x1b[0m \x1b[44m  \x1b[0m\r\n\x1b[4m_");
        let png = render(&s, &f, 1 << 24).unwrap();
        let (w, h, px) = decode(&png.data);
        assert_eq!((w, h), (6 * f.cell_width, 2 * f.cell_height));
        assert_eq!((png.width, png.height), (w, h));
        let at = |x: u32, y: u32| {
            let i = ((y * w + x) * 3) as usize;
            [px[i], px[i + 1], px[i + 2]]
        };
        // Red glyph pixels in the first three cells, nothing else lit.
        let (cw, chh) = (f.cell_width, f.cell_height);
        let mut red = 0;
        for y in 0..chh {
            for x in 0..3 * cw {
                let [r, g, b] = at(x, y);
                assert!(g == 0 && b == 0, "({x},{y}) = {:?}", [r, g, b]);
                red += u32::from(r > 150);
            }
        }
        assert!(red > 20, "{red} red pixels");
        // Blue background cells, filled edge to edge.
        assert_eq!(at(4 * cw, 0), [0, 0, 238]);
        assert_eq!(at(6 * cw - 1, chh - 1), [0, 0, 238]);
        // The default background elsewhere.
        assert_eq!(at(3 * cw + 1, 1), DEFAULT_BG);
        // The cursor (row 1, col 1) is a block of the foreground color.
        assert_eq!(at(cw + cw / 2, chh + chh / 2), DEFAULT_FG);
    }

    #[test]
    fn a_picture_too_large_is_refused_and_a_bad_font_is_named() {
        let f = fonts();
        let s = shot(100, 100, b"");
        let e = render(&s, &f, 1000).unwrap_err();
        assert!(matches!(e, RenderError::TooLarge { .. }), "{e}");
        assert!(e.to_string().contains("format \"text\""), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.ttf");
        std::fs::write(&junk, b"not a font at all").unwrap();
        let e = Fonts::load(&junk, None, 16.0).unwrap_err();
        assert!(e.to_string().contains("junk.ttf"), "{e}");
        let e = Fonts::load(&dir.path().join("missing.ttf"), None, 16.0).unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
        let none = RenderError::NoFont {
            searched: vec!["/a.ttf".into()],
        };
        assert!(none.to_string().contains("fonts-dejavu-core"));
        assert!(none.to_string().contains("/a.ttf"));
    }
}
