import LogKV
