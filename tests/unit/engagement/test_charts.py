"""The results charts' bars: the label column fits the longest label, so a channel's name is not cut off."""

from __future__ import annotations

from siyu.engagement import charts


def test_the_label_column_fits_a_long_channel_name() -> None:
    chart = charts.bar_chart("t", [("Official Account reply window", 3, "sent"), ("Sent", 1, "sent")])
    assert chart.label_width - 8 >= charts.text_width("Official Account reply window")
    assert chart.bars[0].width == charts.WIDTH - chart.label_width - charts.RIGHT  # the largest fills the rest
    assert charts.bar_chart("t", [("Sent", 1, "sent")]).label_width == charts.LABEL
    assert charts.bar_chart("t", [("公众号客服消息窗口" * 5, 1, "sent")]).label_width == charts.MAX_LABEL
