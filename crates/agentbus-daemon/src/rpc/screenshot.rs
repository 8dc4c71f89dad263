//! `captureblockscreenshot`: a terminal block's visible screen as text
//! with attributes (each row's text and runs of equal attributes) and as
//! a PNG the daemon draws with a monospace font found on the system.
//!
//! The screen comes from `agentbus-term` (`Pane::snapshot`: the parsed
//! screen of a hosted pane, or tmux's own for a tmux pane) and so does the
//! drawing (`agentbus_term::render`); this file finds the fonts once,
//! keeps them, and runs the work off the async threads, at most two
//! pictures at a time.

use super::agent::pane_of;
use super::methods::{Ctx, targets_by};
use super::protocol::RpcError;
use crate::config::ScreenshotConfig;
use agentbus_proto::sync::lock;
use agentbus_proto::{AgentId, BlockId};
use agentbus_term::render::{self, Fonts, RenderError};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

/// What to return: the screen as text with attributes, the picture, or
/// both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Text,
    Png,
    #[default]
    Both,
}

impl Format {
    fn as_str(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Png => "png",
            Format::Both => "both",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShotParams {
    agent_id: Option<AgentId>,
    block_id: Option<BlockId>,
    #[serde(default)]
    format: Format,
}

targets_by!(agent_or_block: ShotParams);

/// Pictures drawn at once: each holds its pixels (up to
/// `screenshot.max_pixels` x 3 bytes) while it is encoded.
static DRAWING: Semaphore = Semaphore::const_new(2);

/// The fonts once loaded, for the settings they were loaded with. A
/// failure is not kept: a font installed later is found by the next call.
type FontKey = (Option<PathBuf>, Option<PathBuf>, u16);
static FONTS: Mutex<Option<(FontKey, Arc<Fonts>)>> = Mutex::new(None);

fn fonts(cfg: &ScreenshotConfig) -> Result<Arc<Fonts>, RenderError> {
    let key: FontKey = (cfg.font.clone(), cfg.bold_font.clone(), cfg.font_px);
    if let Some((k, f)) = &*lock(&FONTS)
        && *k == key
    {
        return Ok(f.clone());
    }
    let (regular, bold) = render::find_fonts(cfg.font.as_deref(), cfg.bold_font.as_deref())?;
    let loaded = Arc::new(Fonts::load(
        &regular,
        bold.as_deref(),
        f32::from(cfg.font_px),
    )?);
    *lock(&FONTS) = Some((key, loaded.clone()));
    Ok(loaded)
}

fn render_error(e: &RenderError) -> RpcError {
    let code = match e {
        RenderError::NoFont { .. } => "NO_FONT",
        RenderError::BadFont { .. } => "BAD_FONT",
        RenderError::TooLarge { .. } => "SCREENSHOT_TOO_LARGE",
        RenderError::Encode(_) => "INTERNAL",
    };
    RpcError::app(code, e.to_string())
}

/// The block's screen: `rows`, `cols`, `cursor`, and as `format` asks,
/// `screen` (one `{text, runs}` per row) and `png` (base64) with its
/// `width`, `height`, cell size and `font`.
pub async fn capture(ctx: Ctx, p: ShotParams) -> Result<Value, RpcError> {
    let record = pane_of(&ctx, p.agent_id, p.block_id)?;
    let agent = ctx.state.agents().first_name(&record.block);
    let pane = record.pane.clone();
    let format = p.format;
    let cfg = ctx.state.config().screenshot.clone();
    // Text of a large screen costs memory too: every format takes a turn.
    let _turn = DRAWING
        .acquire()
        .await
        .map_err(|e| RpcError::app("INTERNAL", e.to_string()))?;
    let work = tokio::task::spawn_blocking(move || {
        let shot = pane.snapshot().map_err(|e| {
            let code = match e {
                agentbus_term::TermError::Tmux(_) => "TMUX_FAILED",
                _ => "INTERNAL",
            };
            RpcError::app(code, format!("the screen could not be read: {e}"))
        })?;
        let png = match format {
            Format::Text => None,
            _ => Some(
                fonts(&cfg)
                    .and_then(|f| render::render(&shot, &f, cfg.max_pixels).map(|png| (png, f)))
                    .map_err(|e| render_error(&e))?,
            ),
        };
        Ok::<_, RpcError>((shot, png))
    });
    let (shot, png) = work
        .await
        .map_err(|e| RpcError::app("INTERNAL", format!("the screen shot failed: {e}")))??;
    let mut out = json!({
        "block_id": record.block,
        "agent_id": agent,
        "format": format.as_str(),
        "rows": shot.rows,
        "cols": shot.cols,
        "cursor": shot.cursor,
    });
    if format != Format::Png {
        out["screen"] = json!(shot.text_rows());
    }
    if let Some((png, f)) = png {
        out["png"] = json!(base64::engine::general_purpose::STANDARD.encode(&png.data));
        out["width"] = json!(png.width);
        out["height"] = json!(png.height);
        out["cell_width"] = json!(f.cell_width);
        out["cell_height"] = json!(f.cell_height);
        out["font"] = json!({
            "name": f.name,
            "file": f.regular_path,
            "bold_file": f.bold_path,
            "px": f.px,
        });
    }
    Ok(out)
}
