"""The "Recommendations" page of the Airflow UI: a read-only view over the warehouse, clean events and catalog.

``data`` reads (no Airflow import, unit-tested on a real warehouse), ``render`` turns what was read into
HTML with inline SVG charts, ``app`` is the FastAPI app the plugin in ``plugins/recsys_ui.py`` mounts
behind Airflow's authentication, and ``screenshot`` drives a real api-server and browser for the README.
"""
