//! The browser dashboard's routes (see [`crate::ui`]).

use super::Table;
use crate::ui;
use axum::routing::{delete, get, post};

pub(super) fn add(t: Table) -> Table {
    t.add(&["GET"], "/", true, get(ui::index))
        .add(&["GET"], "/ui/assets/{file}", true, get(ui::asset))
        .add(&["GET"], "/ui/login", true, get(ui::login))
        .add(&["GET"], "/ui/session", false, get(ui::session))
        .add(&["POST"], "/ui/logout", false, post(ui::logout))
        .add(&["POST"], "/v1/ui/links", false, post(ui::new_link))
        .add(&["DELETE"], "/v1/ui/sessions", false, delete(ui::end_all))
}
