"""The tables the screens use redraw only the row whose cell changed, and show the change."""

from __future__ import annotations

from rich.text import Text
from textual.app import App, ComposeResult

from controlroom.widgets.changes import same, set_cell
from controlroom.widgets.row_table import RowTable


class OneTable(App[None]):
    def compose(self) -> ComposeResult:
        yield RowTable(id="table")

    def on_mount(self) -> None:
        table = self.query_one(RowTable)
        table.add_column("status", key="status")
        table.add_column("evidence", key="evidence")
        for n in range(15):
            table.add_row(Text("WAIT"), Text(f"item {n}"), key=f"row-{n}")


async def test_a_changed_cell_is_shown_and_only_its_row_is_rendered_again() -> None:
    app = OneTable()
    async with app.run_test(size=(40, 20)) as pilot:
        table = app.query_one(RowTable)
        await pilot.pause()
        rendered: list[object] = []
        original = table._render_cell

        def counting(*args: object, **kwargs: object) -> object:
            rendered.append(args[0])  # the row index
            return original(*args, **kwargs)  # type: ignore[arg-type]

        table._render_cell = counting  # type: ignore[method-assign]
        table.update_cell("row-3", "status", Text("PASS", style="green"))
        await pilot.pause()
        screen = app.export_screenshot()
        assert "PASS" in screen and screen.count("WAIT") == 14
        assert set(rendered) == {3}  # row 3's cells, and no other row's

        # A value equal as shown is not written; a change of style alone is.
        rendered.clear()
        assert not set_cell(table, "row-3", "status", Text("PASS", style="green"))
        assert set_cell(table, "row-3", "status", Text("PASS", style="red"))
        await pilot.pause()
        assert set(rendered) == {3}
        assert "red" in str(table.get_cell("row-3", "status").style)


def test_same_compares_what_is_shown() -> None:
    assert same(Text("a", style="red"), Text("a", style="red"))
    assert not same(Text("a", style="red"), Text("a", style="green"))  # rich's == would say equal
    assert not same(Text("a"), "a") and same("a", "a")
