"""The hive agent: runs on machines with accelerators, imports no Django app.

It detects devices, runs one worker process per loaded model, and keeps one
outbound websocket to the queen (so it works behind NAT).
"""
