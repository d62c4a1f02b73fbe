# op: file.replace
$DataB64 = '__FAILOVER_DATA__'
# --- prologue: identical in every template (tests/test_templates.py checks it) ---
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
function Get-Win32Code($Exception) {
    # The Win32 error behind an exception chain (0 when there is none).
    for ($e = $Exception; $null -ne $e; $e = $e.InnerException) {
        if ($e -is [ComponentModel.Win32Exception]) {
            return $e.NativeErrorCode
        }
        if ($e -is [IO.IOException] -and ($e.HResult -band 0xFFFF0000) -eq 0x80070000) {
            return $e.HResult -band 0xFFFF
        }
    }
    return 0
}
function Get-ErrorChain($Exception) {
    # Every message of the chain: 'Cannot start service' alone hides the cause (1069, 1058, 1068).
    $messages = @()
    for ($e = $Exception; $null -ne $e; $e = $e.InnerException) {
        $text = [string]$e.Message
        $code = Get-Win32Code $e
        if ($code -ne 0 -and $null -eq $e.InnerException) {
            $text = "$text (Win32 error $code)"
        }
        if ($messages -notcontains $text) {
            $messages += $text
        }
    }
    return ($messages -join ' <- ')
}
function Write-Failure($Exception) {
    @{ ok = $false; error = (Get-ErrorChain $Exception) } | ConvertTo-Json -Compress
    exit 1
}
# --- end of prologue ---
# --- helpers: paths (identical wherever used) ---
function Assert-AbsolutePath([string]$Path) {
    # IsPathRooted accepts C:foo, \foo and UNC paths; .NET resolves those against the process, not us.
    if ($Path -notmatch '^[A-Za-z]:\\' -or [IO.Path]::GetFullPath($Path) -ne $Path) {
        throw "not an absolute path: '$Path'"
    }
}
function Get-PathKind([string]$Path) {
    # Test-Path says $false on access denied; GetAttributes tells a missing path from a forbidden one.
    try {
        $attributes = [IO.File]::GetAttributes($Path)
    }
    catch [IO.FileNotFoundException], [IO.DirectoryNotFoundException] {
        return 'missing'
    }
    catch [UnauthorizedAccessException] {
        throw "access denied: ${Path}: $(Get-ErrorChain $_.Exception)"
    }
    if (($attributes -band [IO.FileAttributes]::Directory) -ne 0) {
        return 'folder'
    }
    return 'file'
}
# --- end of helpers: paths ---
# --- helpers: read (identical wherever used) ---
function Read-SharedBytes([string]$Path) {
    # Share read, write and delete: a running AccountServer keeps Settings.xml open for writing.
    $stream = [IO.File]::Open($Path, [IO.FileMode]::Open, [IO.FileAccess]::Read, [IO.FileShare]'ReadWrite, Delete')
    try {
        $bytes = New-Object byte[] $stream.Length
        $done = 0
        while ($done -lt $bytes.Length) {
            $n = $stream.Read($bytes, $done, $bytes.Length - $done)
            if ($n -le 0) {
                throw "short read of ${Path}: $done of $($bytes.Length) bytes"
            }
            $done += $n
        }
        return , $bytes
    }
    finally {
        $stream.Dispose()
    }
}
function Get-Sha256Hex([byte[]]$Bytes) {
    # Not Get-FileHash (a script function a policy can block) nor SHA256::Create() (throws under FIPS).
    $sha = New-Object Security.Cryptography.SHA256CryptoServiceProvider
    try {
        return ([BitConverter]::ToString($sha.ComputeHash($Bytes)) -replace '-', '').ToLowerInvariant()
    }
    finally {
        $sha.Dispose()
    }
}
# --- end of helpers: read ---
function Remove-TempFile([string]$Path) {
    # '' when it is gone, else where it stays (a virus scanner may still hold it open).
    try {
        if ((Get-PathKind $Path) -ne 'missing') {
            [IO.File]::Delete($Path)
        }
        return ''
    }
    catch {
        return "; the temporary file $Path could not be removed: $(Get-ErrorChain $_.Exception)"
    }
}
try {
    $Data = [Text.Encoding]::UTF8.GetString([Convert]::FromBase64String($DataB64)) | ConvertFrom-Json
    $path = [string]$Data.path
    $backup = [string]$Data.backup_path
    $wanted = ([string]$Data.sha256).ToLowerInvariant()
    $expected = ([string]$Data.expected_sha256).ToLowerInvariant()
    $bytes = [Convert]::FromBase64String([string]$Data.content_b64)
    Assert-AbsolutePath $path
    Assert-AbsolutePath $backup
    if ((Get-PathKind $path) -ne 'file') {
        throw "file not found: $path"
    }
    $current = Get-Sha256Hex (Read-SharedBytes $path)
    $changed = $false
    $note = ''
    if ($current -ne $wanted) {
        if ($current -ne $expected) {
            throw "file $path changed since it was read (sha256 is $current, expected $expected); nothing was written"
        }
        if ((Get-PathKind $backup) -ne 'missing') {
            throw "backup file already exists: $backup"
        }
        # Beside the target: File.Replace swaps within one volume only.
        $name = [IO.Path]::GetFileName($path) + '.' + [Guid]::NewGuid().ToString('N') + '.tmp'
        $tmp = [IO.Path]::Combine([IO.Path]::GetDirectoryName($path), $name)
        try {
            [IO.File]::WriteAllBytes($tmp, $bytes)
            $written = Get-Sha256Hex (Read-SharedBytes $tmp)
            if ($written -ne $wanted) {
                throw "content check failed: written sha256 $written, expected $wanted; nothing was replaced"
            }
            $current = Get-Sha256Hex (Read-SharedBytes $path)
            if ($current -ne $expected) {
                throw "file $path changed since it was read (sha256 is $current, expected $expected); nothing was written"
            }
        }
        catch {
            $failure = $_.Exception
            $left = Remove-TempFile $tmp
            throw "$(Get-ErrorChain $failure)$left"
        }
        # File.Replace keeps the original's ACLs and attributes and leaves the original as the backup. A virus
        # scanner holding the fresh file makes it fail now and then (1175, 1176): try again a few times.
        for ($attempt = 1; -not $changed; $attempt++) {
            try {
                [IO.File]::Replace($tmp, $path, $backup)
                $changed = $true
            }
            catch {
                $failure = $_.Exception
                $code = Get-Win32Code $failure
                if ((Get-PathKind $path) -eq 'missing') {
                    # 1177: the original is the backup already, the new content still the temporary file.
                    # Never delete the temporary file now: put the checked new content (or the original) in place.
                    $moved = $false
                    try {
                        [IO.File]::Move($tmp, $path)
                        $moved = $true
                    }
                    catch {
                        $moveError = Get-ErrorChain $_.Exception
                    }
                    if ($moved) {
                        $changed = $true
                        $note = "File.Replace failed (Win32 error $code) after renaming the original to the backup; the checked new content was moved into place"
                        continue
                    }
                    $restored = $false
                    try {
                        [IO.File]::Copy($backup, $path)
                        $restored = $true
                    }
                    catch {
                        $restoreError = Get-ErrorChain $_.Exception
                    }
                    if ($restored) {
                        throw "replacing $path failed (Win32 error $code) and the new content could not be moved into place ($moveError); the original was copied back from $backup; the new content is kept in $tmp"
                    }
                    throw "replacing $path failed (Win32 error $code): $path is MISSING ($moveError; $restoreError); the original is $backup, the new content $tmp"
                }
                if ($attempt -ge 5 -or (1175, 1176, 1177, 32, 33) -notcontains $code) {
                    $left = Remove-TempFile $tmp
                    throw "replacing $path failed after $attempt attempt(s): $(Get-ErrorChain $failure); $path is unchanged$left"
                }
                Start-Sleep -Milliseconds (250 * $attempt)
            }
        }
    }
    $backupPath = $null
    if ($changed) {
        $backupPath = $backup
    }
    [ordered]@{
        ok          = $true
        path        = $path
        backup_path = $backupPath
        sha256      = $wanted
        changed     = $changed
        note        = $note
    } | ConvertTo-Json -Compress
}
catch {
    Write-Failure $_.Exception
}
