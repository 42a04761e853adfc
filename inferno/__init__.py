"""inferno: SLO-aware, cost-optimal allocation of LLM inference servers.

The core package holds the data model, the queueing analyzer, the optimizer and the control
loop. It never imports the worlds it drives (`sim`, `live`); they plug in through the ports
in `inferno.control.ports`.
"""

__version__ = "0.1.0"
