"""What every actor process shares and that is no domain: logging, metrics for the Ray
dashboard, and owned background tasks."""
