"""``streamml dashboard``: a read-only local web page showing the monitor's windows, drift, alerts, model
events and the workers' throughput, lag and latency, live (it redraws without a reload).

:mod:`~streamml.monitor.dashboard.state` keeps the bounded view and follows the topics into it;
:mod:`~streamml.monitor.dashboard.server` serves the page (its HTML, script and style ship in ``static/``).
"""

from streamml.monitor.dashboard.server import Dashboard, create_app
from streamml.monitor.dashboard.state import DashboardFeed, DashboardState

__all__ = ["Dashboard", "DashboardFeed", "DashboardState", "create_app"]
