"""The step actions, one module per kind of step: services, Settings.xml, the task queue, the database, people."""
