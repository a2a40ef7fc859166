"""none: no power source. Nothing is sampled and energy is N/A, never estimated."""

from . import PowerSource, register


@register
class NoPower(PowerSource):
    kind = "none"

    def samples(self, readings):
        return [], []
