"""Every string the Web UI shows, in Chinese and English: one table, looked up by key."""

from __future__ import annotations

from typing import Literal

Language = Literal["zh", "en"]
LANGUAGES: tuple[tuple[str, Language], ...] = (("中文", "zh"), ("English", "en"))
DEFAULT_LANGUAGE: Language = "zh"

# key: (Chinese, English). Entries with {fields} are filled with ``text(key, lang, **fields)``.
STRINGS: dict[str, tuple[str, str]] = {
    "title": ("## 转写 · 离线中文语音识别", "## zhuanxie · offline Mandarin speech recognition"),
    "language": ("界面语言", "Language"),
    # tabs
    "tab_single": ("单文件识别", "Single file"),
    "tab_batch": ("批量处理", "Batch"),
    "tab_live": ("实时录音", "Live microphone"),
    "tab_hotwords": ("热词", "Hotwords"),
    "tab_system": ("系统信息", "System"),
    # options shared by the recognition tabs
    "model": ("模型", "Model"),
    "hotword_list": ("已保存的热词列表", "Saved hotword list"),
    "hotwords": ("热词（每行一个，或用逗号分隔）", "Hotwords (one per line, or comma-separated)"),
    "punctuation": ("标点", "Punctuation"),
    "itn": ("数字规整（ITN）", "Numbers as digits (ITN)"),
    "vad": ("语音检测切分（VAD）", "Split at pauses (VAD)"),
    "unavailable": ("（未加载）", " (not loaded)"),
    # single file
    "audio": ("音频：上传文件或录音", "Audio: upload a file or record"),
    "transcribe": ("开始识别", "Transcribe"),
    "text": ("识别结果", "Transcript"),
    "timestamps": ("时间戳", "Timestamps"),
    "col_start": ("开始（秒）", "Start (s)"),
    "col_end": ("结束（秒）", "End (s)"),
    "col_text": ("文本", "Text"),
    "downloads": ("下载（txt / srt / vtt / json）", "Downloads (txt / srt / vtt / json)"),
    "found": ("命中的热词：{found}", "Hotwords found: {found}"),
    "found_none": ("未命中任何热词", "No hotword found"),
    "no_audio": ("请先上传或录制一段音频", "Upload or record a clip first"),
    "busy": ("服务繁忙，请 {seconds} 秒后重试", "The service is busy; try again in {seconds} s"),
    "failed": ("识别失败：{error}", "Transcription failed: {error}"),
    "timeout": (
        "识别超过 {seconds} 秒，已取消",
        "Transcription took over {seconds} s and was cancelled",
    ),
    # batch
    "batch_files": ("音频文件（可多选）", "Audio files (several)"),
    "batch_start": ("开始批量识别", "Start the batch"),
    "batch_table": ("结果", "Results"),
    "batch_zip": ("全部结果（zip）", "All results (zip)"),
    "batch_none": ("请先选择音频文件", "Choose audio files first"),
    "batch_gone": ("该批量任务已被删除", "This batch job was deleted"),
    "batch_summary": (
        "共 {total} 个文件：完成 {done}，失败 {failed}，进行中 {active}",
        "{total} files: {done} done, {failed} failed, {active} in progress",
    ),
    "col_file": ("文件", "File"),
    "col_state": ("状态", "State"),
    "col_duration": ("时长（秒）", "Duration (s)"),
    "state_pending": ("等待中", "waiting"),
    "state_running": ("识别中", "transcribing"),
    "state_done": ("完成", "done"),
    "state_failed": ("失败", "failed"),
    "state_cancelled": ("已取消", "cancelled"),
    # hotword lists
    "lists": ("热词列表", "Hotword lists"),
    "list_name": ("列表名称", "List name"),
    "list_phrases": ("热词（每行一个）", "Hotwords (one per line)"),
    "list_save": ("保存", "Save"),
    "list_delete": ("删除", "Delete"),
    "list_new": ("新建", "New"),
    "list_saved": ("已保存「{name}」，共 {count} 个热词", "Saved “{name}”: {count} hotwords"),
    "list_deleted": ("已删除「{name}」", "Deleted “{name}”"),
    "list_none": ("请先选择一个列表", "Choose a list first"),
    # system
    "throughput": ("吞吐（倍实时）", "Throughput (× real time)"),
    "queue": ("队列", "Queue"),
    "axis_time": ("时间", "Time"),
    "axis_speed": ("倍实时", "× real time"),
    "axis_count": ("数量", "Count"),
    "axis_series": ("类别", "Series"),
    "series_segments": ("待识别片段", "segments waiting"),
    "series_urgent": ("交互请求", "interactive inputs"),
    "series_bulk": ("批量输入", "bulk inputs"),
    "info_model": ("模型", "Model"),
    "info_device": ("设备", "Device"),
    "info_memory": ("内存", "Memory"),
    "info_process": ("进程", "Process"),
    "info_peak": ("峰值", "peak"),
    "info_now": ("当前", "now"),
    "info_total": ("总计", "total"),
    "info_audio": ("已识别音频", "Audio transcribed"),
    "info_speed": ("模型速度", "Model speed"),
    "info_batches": ("批次 / 片段 / 填充", "Batches / segments / padding"),
    "info_oom": ("显存不足重试", "Out-of-memory retries"),
    "info_load": ("当前负载（交互 / 批量 / 待分配）", "Load (interactive / bulk / backlog)"),
    "info_hotwords": ("热词", "Hotwords"),
    "yes": ("支持", "supported"),
    "no": ("不支持", "not supported"),
}


def text(key: str, lang: str, **fields: object) -> str:
    """The string ``key`` in ``lang`` ('zh' or 'en'; anything else falls back to Chinese)."""
    zh, en = STRINGS[key]
    chosen = en if lang == "en" else zh
    return chosen.format(**fields) if fields else chosen
