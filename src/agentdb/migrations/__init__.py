"""The Alembic environment of agentdb (``env.py``, ``script.py.mako``, ``versions/``).

It ships inside the package so an installed ``agentdb`` carries its migrations;
the repository's ``alembic.ini`` points at it as ``agentdb:migrations``.
"""
